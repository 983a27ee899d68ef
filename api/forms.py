import datetime as dt

from django import forms
from django.utils import timezone

from .models import APIToken
from .tokens import MAX_TOKENS_PER_USER, tokens_of

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

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user

    def clean(self):
        cleaned = super().clean()
        if tokens_of(self.user).filter(revoked_at__isnull=True).count() >= MAX_TOKENS_PER_USER:
            raise forms.ValidationError(f"You have {MAX_TOKENS_PER_USER} tokens; revoke one first.")
        return cleaned

    @property
    def expires_at(self) -> dt.datetime | None:
        days = self.cleaned_data.get("expires_in_days")
        return timezone.now() + dt.timedelta(days=int(days)) if days else None
