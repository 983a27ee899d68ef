"""A VM's firewall (/api/v1/vms/<uuid>/firewall/): read it, or replace its policy and rules at once.

The VM is found as the VM endpoints find it (visible_to: staff all, customers their own; else 404);
the change goes through firewall.actions, as the page's does, and answers 202 with the operation that
puts it on the node.
"""

import uuid

from django.http import Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from firewall import actions
from vms.choices import OperationKind
from vms.models import VirtualMachine

from ..serializers.firewall import FirewallSerializer
from ..serializers.vms import OperationSerializer
from .base import RateLimitedFirst
from .vms import accepted


@extend_schema(tags=["firewall"])
class FirewallView(RateLimitedFirst, APIView):
    serializer_class = FirewallSerializer

    def vm(self, vm_uuid: str) -> VirtualMachine:
        try:
            vm_uuid = uuid.UUID(vm_uuid)
        except ValueError:
            raise Http404("no such VM") from None
        visible = VirtualMachine.objects.visible_to(self.request.user).select_related("node", "plan", "owner")
        return get_object_or_404(visible, uuid=vm_uuid)

    @extend_schema(responses={200: FirewallSerializer})
    def get(self, request, vm_uuid):
        """The VM's default policy and rules (a VM that never had a firewall: allow, no rules)."""
        vm = self.vm(vm_uuid)
        firewall = actions.firewall_of(vm)
        applying = vm.operations.filter(kind=OperationKind.FIREWALL).active().exists()
        data = {
            "default_policy": firewall.default_policy,
            "rules": actions.current_rules(vm),
            "max_rules": vm.plan.max_firewall_rules,
            "applying": applying,
        }
        return Response(FirewallSerializer(data).data)

    @extend_schema(request=FirewallSerializer, responses={202: OperationSerializer})
    def put(self, request, vm_uuid):
        """Replace the policy and every rule; applied on the running VM within seconds, no restart."""
        vm = self.vm(vm_uuid)
        serializer = FirewallSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            operation = actions.save(
                vm, request.user, policy=data["default_policy"], rules=[dict(rule) for rule in data["rules"]]
            )
        except actions.RulesInvalid as invalid:
            raise ValidationError(
                {
                    f"rules[{index}].{field}": messages
                    for index, fields in invalid.errors.items()
                    for field, messages in fields.items()
                }
            ) from None
        return accepted(operation)
