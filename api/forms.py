import datetime as dt
import ipaddress

from django import forms
from django.conf import settings
from django.utils import timezone

from .models import APIToken
from .tokens import MAX_TOKENS_PER_USER, TokenRefused, check_staff_token, tokens_of

EXPIRY_CHOICES = [("30", "30 days"), ("90", "90 days"), ("365", "1 year"), ("", "Never")]


class CreateTokenForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        help_text="What uses it, e.g. “backup script” or “terraform”.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "class": "form-control"}),
    )
    scope = forms.ChoiceField(
        choices=APIToken.Scope.choices,
        initial=APIToken.Scope.READ,
        widget=forms.RadioSelect(attrs={"class": "form-check-input"}),
        help_text="A read-only token is refused any change: it cannot start, stop or delete anything.",
    )
    expires_in_days = forms.ChoiceField(
        label="Expires",
        choices=EXPIRY_CHOICES,
        initial="90",
        required=False,
        widget=forms.Select(attrs={"class": "form-select"}),
    )

    allowed_networks = forms.CharField(
        label="Only from these addresses",
        required=False,
        max_length=1000,
        help_text="Optional: address ranges the token works from, e.g. 203.0.113.0/24 2001:db8::/48 "
        "(space- or comma-separated). Empty: from anywhere.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "class": "form-control", "spellcheck": "false"}),
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        if user.is_staff:  # staff tokens live at most KVMPANEL_STAFF_TOKEN_MAX_DAYS (api.tokens)
            days = settings.KVMPANEL_STAFF_TOKEN_MAX_DAYS
            field = self.fields["expires_in_days"]
            shorter = [(value, label) for value, label in EXPIRY_CHOICES if value and int(value) < days]
            field.choices = [*shorter, (str(days), f"{days} days (the longest for staff)")]
            field.initial, field.required = str(days), True

    def clean_allowed_networks(self) -> str:
        texts = self.cleaned_data["allowed_networks"].replace(",", " ").split()
        try:
            networks = [ipaddress.ip_network(text, strict=False) for text in texts]
        except ValueError as error:
            raise forms.ValidationError(f"Not an address range: {error}") from None
        return " ".join(str(network) for network in networks)

    def clean(self):
        cleaned = super().clean()
        if tokens_of(self.user).filter(revoked_at__isnull=True).count() >= MAX_TOKENS_PER_USER:
            raise forms.ValidationError(f"You have {MAX_TOKENS_PER_USER} tokens; revoke one first.")
        if "expires_in_days" in cleaned:
            try:
                check_staff_token(self.user, self.expires_at)
            except TokenRefused as refusal:
                raise forms.ValidationError(str(refusal)) from None
        return cleaned

    @property
    def expires_at(self) -> dt.datetime | None:
        days = self.cleaned_data.get("expires_in_days")
        return timezone.now() + dt.timedelta(days=int(days)) if days else None
