from django import forms

from kvmpanel.forms import style_fields
from vms.models import VirtualMachine
from vms.validators import validate_hostname

from .models import BackupSchedule


class ScheduleForm(forms.ModelForm):
    """A VM's backup schedule, as its owner sets it."""

    class Meta:
        model = BackupSchedule
        fields = [
            "enabled",
            "frequency",
            "weekday",
            "at",
            "keep_last",
            "keep_daily",
            "keep_weekly",
            "keep_monthly",
        ]
        widgets = {"at": forms.TimeInput(attrs={"type": "time"}, format="%H:%M")}
        labels = {"at": "At", "keep_last": "Keep the last"}

    def clean(self):
        data = super().clean()
        kept = sum(data.get(f) or 0 for f in ("keep_last", "keep_daily", "keep_weekly", "keep_monthly"))
        if kept == 0:
            raise forms.ValidationError("Keep at least one backup.")
        return data

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        style_fields(self)


class RestoreForm(forms.Form):
    """Into the VM itself (its disk replaced, confirmed by typing its hostname), or as a new VM."""

    mode = forms.ChoiceField(choices=[("replace", "Replace this VM's disk"), ("new", "As a new VM")])
    confirm_hostname = forms.CharField(required=False, max_length=253)
    hostname = forms.CharField(required=False, max_length=253, help_text="The new VM's hostname.")

    def __init__(self, *args, vm: VirtualMachine, **kwargs):
        super().__init__(*args, **kwargs)
        self.vm = vm

    def clean(self):
        data = super().clean()
        if (
            data.get("mode") == "replace"
            and data.get("confirm_hostname", "").strip().lower() != self.vm.hostname
        ):
            self.add_error("confirm_hostname", "Type the VM's hostname exactly to confirm.")
        if data.get("mode") == "new":
            hostname = data.get("hostname", "").strip().lower()
            try:
                validate_hostname(hostname)
            except forms.ValidationError as error:
                self.add_error("hostname", error)
            data["hostname"] = hostname
        return data
