from django import forms

from kvmpanel.forms import StyledForm, style_fields

from .choices import Policy, Protocol


def style_small_fields(form: forms.Form) -> None:
    """Bootstrap's small controls: the firewall's forms sit in a table's card, beside small buttons."""
    style_fields(form)
    for field in form.fields.values():
        small = "form-select-sm" if isinstance(field.widget, forms.Select) else "form-control-sm"
        field.widget.attrs["class"] += f" {small}"


class SmallStyledForm(StyledForm):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        style_small_fields(self)

    def full_clean(self):
        super().full_clean()
        style_small_fields(self)  # rendering a field validates, which styles the fields again


class RuleForm(SmallStyledForm, forms.Form):
    """One inbound rule as the VM page adds it; the port is one number or a range ("8000-8100")."""

    protocol = forms.ChoiceField(choices=Protocol.choices, initial=Protocol.TCP)
    ports = forms.CharField(required=False, max_length=11, label="Port")  # a port, or a range: 8000-8100
    source = forms.CharField(required=False, max_length=43)  # an IPv4 or IPv6 network; empty: anywhere
    comment = forms.CharField(required=False, max_length=100)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name, placeholder in {
            "ports": "22 or 8000-8100",
            "source": "anywhere, or e.g. 203.0.113.0/24",
            "comment": "optional",
        }.items():
            self.fields[name].widget.attrs["placeholder"] = placeholder

    def clean_ports(self) -> tuple[int | None, int | None]:
        text = self.cleaned_data["ports"].replace(" ", "")
        if not text:
            return None, None
        start, _dash, end = text.partition("-")
        if not start.isdigit() or (end and not end.isdigit()):
            raise forms.ValidationError("Write a port (22) or a range (8000-8100).")
        return int(start), int(end) if end else None

    def rule(self) -> dict:
        port_start, port_end = self.cleaned_data["ports"]
        data = {key: self.cleaned_data[key] for key in ("protocol", "source", "comment")}
        return {**data, "port_start": port_start, "port_end": port_end}


class PolicyForm(SmallStyledForm, forms.Form):
    default_policy = forms.ChoiceField(
        choices=[(Policy.ALLOW, "Allow everything in"), (Policy.DENY, "Deny all but the rules")],
        label="Default policy",
    )
