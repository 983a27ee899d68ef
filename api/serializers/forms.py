"""Serializers whose input the portal's own Django forms validate, so each rule lives in one place.

The serializer declares the fields (types, for the schema and a first check);
the form then decides, exactly as on the page, and its errors come back field by field.
"""

from rest_framework import serializers

# The largest id a BigAutoField holds: bounds ids before they reach a query.
MAX_ID = 2**63 - 1


def object_id(**kwargs) -> serializers.IntegerField:
    return serializers.IntegerField(min_value=1, max_value=MAX_ID, **kwargs)


def form_errors(form) -> dict:
    """A form's errors in DRF's shape: {field: [messages]}, the form-wide ones as non_field_errors."""
    errors = {}
    for name, entries in form.errors.get_json_data().items():
        key = "non_field_errors" if name == "__all__" else name
        errors[key] = [entry["message"] for entry in entries]
    return errors


class FormValidated(serializers.Serializer):
    """validate() hands the typed input to `form_class` and returns its cleaned data; `.form` keeps it."""

    form_class = None

    def form_kwargs(self) -> dict:
        return self.context.get("form_kwargs", {})

    def validate(self, attrs):
        self.form = self.form_class(data=attrs, **self.form_kwargs())
        if not self.form.is_valid():
            raise serializers.ValidationError(form_errors(self.form))
        return self.form.cleaned_data
