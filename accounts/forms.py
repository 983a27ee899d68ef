import copy

from django import forms
from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.forms import AuthenticationForm, UserCreationForm
from django.db import IntegrityError, transaction

from kvmpanel.forms import StyledForm

from .models import SSHKey
from .sshkeys import ParsedKey, keys_of, parse_public_key

MAX_KEYS_PER_USER = 50  # enough for every laptop and CI runner; bounds what a VM's authorized_keys gets


class AddSSHKeyForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        required=False,
        help_text="To recognise it by, e.g. “work laptop”. Left empty, the key's comment is used.",
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )
    public_key = forms.CharField(
        label="Public key",
        help_text="The one line in your public key file, e.g. ~/.ssh/id_ed25519.pub. Never your private key.",
        widget=forms.Textarea(
            attrs={
                "rows": 4,
                "class": "mono",
                "autocomplete": "off",
                "spellcheck": "false",
                "placeholder": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA… you@laptop",
            }
        ),
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        self.parsed: ParsedKey | None = None
        for field in self.fields.values():
            field.widget.attrs["class"] = f"form-control {field.widget.attrs.get('class', '')}".strip()

    def full_clean(self):
        super().full_clean()
        for name in self.errors:
            self._mark_invalid(name)

    def _mark_invalid(self, name: str) -> None:
        if name in self.fields and "is-invalid" not in self.fields[name].widget.attrs["class"]:
            self.fields[name].widget.attrs["class"] += " is-invalid"

    def clean_public_key(self) -> str:
        try:
            self.parsed = parse_public_key(self.cleaned_data["public_key"])
        except forms.ValidationError as error:
            if error.code == "private_key":
                self._forget_pasted_key()
            raise
        return self.parsed.public_key

    def _forget_pasted_key(self) -> None:
        # A private key must not travel back to the browser in the re-rendered form.
        self.data = self.data.copy()
        self.data["public_key"] = ""

    def clean(self):
        cleaned = super().clean()
        if self.parsed is None:
            return cleaned
        cleaned["name"] = cleaned.get("name") or self.parsed.comment[:100]
        if not cleaned["name"]:
            self.add_error("name", "Give the key a name: it has no comment to use instead.")
        existing = keys_of(self.user).filter(fingerprint=self.parsed.fingerprint).first()
        if existing:
            self.add_error("public_key", f"You have already added this key, as “{existing.name}”.")
        elif keys_of(self.user).count() >= MAX_KEYS_PER_USER:
            self.add_error(
                None, f"You have {MAX_KEYS_PER_USER} keys, the most an account may have. Delete one first."
            )
        return cleaned

    def save(self) -> SSHKey | None:
        """The new key, or None (with the form's error set) if the same key was added meanwhile."""
        try:
            with transaction.atomic():
                return SSHKey.objects.create(
                    user=self.user,
                    name=self.cleaned_data["name"],
                    public_key=self.parsed.public_key,
                    fingerprint=self.parsed.fingerprint,
                )
        except IntegrityError:
            # Another request added it between clean() and here; the database constraint held.
            self.add_error("public_key", "You have already added this key.")
            self._mark_invalid("public_key")
            return None


class LoginForm(StyledForm, AuthenticationForm):
    """Django's sign-in form, saying why a right password is still refused (suspended, unconfirmed)."""

    def clean(self):
        try:
            return super().clean()
        except forms.ValidationError:
            self._explain_suspension()
            raise

    def _explain_suspension(self) -> None:
        # Only with the right password: otherwise a stranger could learn who is suspended.
        user = get_user_model().objects.filter(username=self.cleaned_data.get("username")).first()
        if user is not None and user.is_suspended and user.check_password(self.cleaned_data.get("password")):
            reason = f" ({user.suspension_reason})" if user.suspension_reason else ""
            raise forms.ValidationError(
                f"This account is suspended{reason}. Please contact support.", code="suspended"
            )

    def confirm_login_allowed(self, user):
        super().confirm_login_allowed(user)
        if not user.email_confirmed:
            raise forms.ValidationError(
                f"Please confirm your email address first: open the link we sent to {user.email}.",
                code="email_unconfirmed",
            )


PASSWORD_FIELD = "password1"  # noqa: S105  (a field's name)


class SignUpForm(StyledForm, UserCreationForm):
    email = forms.EmailField(help_text="We send a link here to confirm it; you sign in after opening it.")

    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ("username", "email")

    def clean_email(self) -> str:
        email = self.cleaned_data["email"]
        if get_user_model().objects.filter(email__iexact=email).exists():
            raise forms.ValidationError(
                "An account with this address exists already. Sign in, or reset its password."
            )
        return email

    def validate_password_for_user(self, user, **kwargs):
        # A weak password is about the password field, not its confirmation (Django's default).
        super().validate_password_for_user(user, password_field_name=PASSWORD_FIELD)

    def save(self, commit=True):
        user = super().save(commit=False)
        user.email_confirmed = False
        if commit:
            user.save()
        return user


class ProfileForm(StyledForm, forms.ModelForm):
    class Meta:
        model = get_user_model()
        fields = ("first_name", "last_name", "email")
        help_texts = {"email": "A new address takes effect once you open the link we send to it."}

    def clean_email(self) -> str:
        email = self.cleaned_data["email"]
        taken = get_user_model().objects.filter(email__iexact=email).exclude(pk=self.instance.pk)
        if email and taken.exists():
            raise forms.ValidationError("Another account uses this address.")
        return email


class CodeForm(StyledForm, forms.Form):
    code = forms.CharField(
        label="Code",
        max_length=32,
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True}
        ),
        help_text="The 6 digits your authenticator app shows now, or one of your recovery codes.",
    )


class ConfirmPasswordForm(StyledForm, forms.Form):
    """The password again (and the second factor, when the user has one) before a sensitive action."""

    password = forms.CharField(
        strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "current-password", "autofocus": True})
    )

    def __init__(self, *args, request, needs_code: bool, **kwargs):
        self.request = request
        super().__init__(*args, **kwargs)
        if needs_code:
            self.fields["code"] = copy.deepcopy(CodeForm.base_fields["code"])

    def clean(self):
        cleaned = super().clean()
        user = self.request.user
        # Through authenticate(), so failures count towards the lockout like sign-in failures.
        if (
            "password" in cleaned
            and authenticate(self.request, username=user.get_username(), password=cleaned["password"]) is None
        ):
            self.add_error("password", "That is not your password.")
        return cleaned
