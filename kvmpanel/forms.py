"""Form helpers every app's pages share."""

from django import forms


def style_fields(form: forms.Form) -> None:
    """Bootstrap classes on every widget, marking the invalid ones."""
    for name, field in form.fields.items():
        widget = field.widget
        if isinstance(widget, forms.CheckboxSelectMultiple | forms.CheckboxInput):
            css = "form-check-input"
        elif isinstance(widget, forms.Select):
            css = "form-select"
        else:
            css = "form-control"
        if (form._errors or {}).get(name):  # never form.errors: that would validate an unbound form
            css += " is-invalid"
        widget.attrs["class"] = css


class StyledForm:
    """Mixin: Bootstrap classes on the fields, the invalid ones marked after validation."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        style_fields(self)

    def full_clean(self):
        super().full_clean()
        style_fields(self)

    def add_error(self, field, error):
        super().add_error(field, error)
        style_fields(self)  # errors a view adds after validation (a wrong code) are marked too
