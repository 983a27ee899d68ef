"""Query filters for lists (?state=running&plan=3 …); ordering and search are DRF's."""

import django_filters
from django import forms
from django.contrib.auth import get_user_model

from vms.choices import OperationKind, OperationStatus, VMState
from vms.models import Operation, VirtualMachine

from .serializers.forms import MAX_ID


class IdFilter(django_filters.NumberFilter):
    """An object id: a whole number a database column holds (no decimals, nothing that overflows)."""

    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs):
        super().__init__(*args, min_value=1, max_value=MAX_ID, **kwargs)


class VMFilter(django_filters.FilterSet):
    state = django_filters.ChoiceFilter(choices=VMState.choices)
    plan = IdFilter(field_name="plan_id")
    image = IdFilter(field_name="image_id")
    hostname = django_filters.CharFilter(lookup_expr="icontains")
    owner = django_filters.CharFilter(field_name="owner__username", help_text="Username (staff).")

    class Meta:
        model = VirtualMachine
        fields = ["state", "plan", "image", "hostname", "owner"]


class OperationFilter(django_filters.FilterSet):
    vm = django_filters.UUIDFilter(field_name="vm__uuid")
    kind = django_filters.ChoiceFilter(choices=OperationKind.choices)
    status = django_filters.ChoiceFilter(choices=OperationStatus.choices)

    class Meta:
        model = Operation
        fields = ["vm", "kind", "status"]


class UserFilter(django_filters.FilterSet):
    is_staff = django_filters.BooleanFilter()
    suspended = django_filters.BooleanFilter(field_name="suspended_at", lookup_expr="isnull", exclude=True)

    class Meta:
        model = get_user_model()
        fields = ["is_staff", "suspended"]
