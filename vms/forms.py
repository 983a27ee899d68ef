from django import forms

from .models import Image, Plan, VirtualMachine
from .validators import validate_hostname


class CreateVMForm(forms.Form):
    plan = forms.ModelChoiceField(queryset=Plan.objects.filter(active=True), empty_label=None)
    image = forms.ModelChoiceField(
        queryset=Image.objects.filter(active=True), empty_label=None, label="Operating system"
    )
    hostname = forms.CharField(
        max_length=253,
        help_text="Letters, digits and hyphens, e.g. web-1 or web-1.example.com.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    display_name = forms.CharField(
        max_length=100, required=False, help_text="Optional; shown in the panel instead of the hostname."
    )

    def __init__(self, *args, owner=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.owner = owner
        for name, field in self.fields.items():
            css = "form-select" if isinstance(field.widget, forms.Select) else "form-control"
            if self.errors.get(name):
                css += " is-invalid"
            field.widget.attrs["class"] = css

    def clean_hostname(self):
        hostname = self.cleaned_data["hostname"].strip().lower()
        validate_hostname(hostname)
        if self.owner and VirtualMachine.objects.live().filter(owner=self.owner, hostname=hostname).exists():
            raise forms.ValidationError(f"You already have a VM named {hostname}.")
        return hostname

    def clean(self):
        cleaned = super().clean()
        plan, image = cleaned.get("plan"), cleaned.get("image")
        if plan and image and plan.disk_gb < image.min_disk_gb:
            self.add_error("plan", f"{image} needs a disk of at least {image.min_disk_gb} GiB.")
        return cleaned
