from django import forms
from django.db import IntegrityError, transaction

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
