"""VMs and their operations. Access is vms' own: visible_to (staff all, customers their own; else 404),
and every change goes through vms.actions, which checks the state and writes the audit log."""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from network.models import Address
from nodes import usage
from vms import actions
from vms.choices import OperationKind, VMState
from vms.consoles import tokens as console_tokens
from vms.models import Operation, VirtualMachine, VMUsage

from ..filters import OperationFilter, VMFilter
from ..permissions import STAFF
from ..serializers.vms import (
    AddAddressInput,
    AddressSerializer,
    ChangeISOInput,
    ConsoleTokenSerializer,
    CreateVMInput,
    OperationSerializer,
    ReinstallInput,
    RescueInput,
    ResetPasswordInput,
    ResizeInput,
    SetPTRInput,
    UsageSerializer,
    VMDetailSerializer,
    VMSerializer,
)
from .base import RateLimitedFirst


def accepted(operation: Operation) -> Response:
    """202: the operation is queued; GET /operations/<id>/ follows it."""
    return Response(OperationSerializer(operation).data, status=status.HTTP_202_ACCEPTED)


def _simple_action(kind: str, doc: str):
    """A POST without a body that asks for `kind` on the VM."""

    def act(self, request, uuid=None):
        return accepted(actions.request(self.get_object(), request.user, kind))

    act.__name__ = act.__qualname__ = kind
    act.__doc__ = doc
    act = action(detail=True, methods=["post"], url_path=kind.replace("_", "-"), url_name=kind)(act)
    return extend_schema(request=None, responses={202: OperationSerializer})(act)


@extend_schema(tags=["vms"])
class VMViewSet(RateLimitedFirst, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Your VMs (staff: every VM). Changes answer 202 with the queued operation."""

    serializer_class = VMSerializer
    lookup_field = "uuid"
    filterset_class = VMFilter
    search_fields = ["hostname", "display_name"]
    ordering_fields = ["created_at", "hostname", "state"]
    ordering = ["-created_at", "-id"]

    def get_serializer_class(self):
        return VMDetailSerializer if self.action == "retrieve" else VMSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the schema generator has no user
            return VirtualMachine.objects.none()
        return (
            VirtualMachine.objects.visible_to(self.request.user)
            .select_related("node", "plan", "image", "owner", "iso", "rescue_image")
            .prefetch_related("interfaces__addresses")
        )

    def validated(self, input_class, **form_kwargs) -> dict:
        serializer = input_class(data=self.request.data, context={"form_kwargs": form_kwargs})
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    @extend_schema(request=CreateVMInput, responses={201: VMSerializer})
    def create(self, request):
        """Create a VM: it is recorded at once and built by a worker (state provisioning, then running)."""
        vm = actions.create_vm(owner=request.user, **self.validated(CreateVMInput, owner=request.user))
        return Response(self.get_serializer(vm).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={202: OperationSerializer})
    def destroy(self, request, uuid=None):
        """Delete the VM: its disk and all its data are removed."""
        return accepted(actions.request(self.get_object(), request.user, OperationKind.DELETE))

    start = _simple_action(OperationKind.START, "Start the VM.")
    shutdown = _simple_action(OperationKind.SHUTDOWN, "Ask the guest to power off (ACPI).")
    force_off = _simple_action(OperationKind.FORCE_OFF, "Cut the VM's power at once.")
    reboot = _simple_action(OperationKind.REBOOT, "Reboot the guest.")
    leave_rescue = _simple_action(OperationKind.LEAVE_RESCUE, "Boot from the VM's own disk again.")

    @extend_schema(request=ReinstallInput, responses={202: OperationSerializer})
    @action(detail=True, methods=["post"])
    def reinstall(self, request, uuid=None):
        """A new disk from the same or another image; everything on the old disk is lost."""
        vm = self.get_object()
        data = self.validated(ReinstallInput, vm=vm)
        return accepted(
            actions.reinstall(
                vm,
                request.user,
                image=data["image"],
                password=data["password"],
                ssh_keys=data["ssh_keys"],
                user_data=data["user_data"],
            )
        )

    @extend_schema(request=ResetPasswordInput, responses={202: OperationSerializer})
    @action(detail=True, methods=["post"], url_path="reset-password", url_name="reset_password")
    def reset_password(self, request, uuid=None):
        """Set the default user's password in the running guest (through its guest agent)."""
        vm = self.get_object()
        data = self.validated(ResetPasswordInput, vm=vm)
        return accepted(actions.reset_password(vm, request.user, data["password"]))

    @extend_schema(request=RescueInput, responses={202: OperationSerializer})
    @action(detail=True, methods=["post"])
    def rescue(self, request, uuid=None):
        """Boot a rescue system with the VM's disk as its second disk (/dev/vdb)."""
        vm = self.get_object()
        data = self.validated(RescueInput, vm=vm)
        return accepted(
            actions.rescue(
                vm, request.user, image=data["image"], password=data["password"], ssh_keys=data["ssh_keys"]
            )
        )

    @extend_schema(request=ResizeInput, responses={202: OperationSerializer})
    @action(detail=True, methods=["post"])
    def resize(self, request, uuid=None):
        """Move the stopped VM to another plan: vCPUs and memory change, the disk grows (never shrinks)."""
        vm = self.get_object()
        data = self.validated(ResizeInput, vm=vm)
        return accepted(actions.resize(vm, request.user, data["plan"]))

    @extend_schema(request=ChangeISOInput, responses={202: OperationSerializer})
    @action(detail=True, methods=["post"])
    def iso(self, request, uuid=None):
        """Insert an ISO into the VM's CD drive (optionally to boot from it), or eject it (iso: null)."""
        vm = self.get_object()
        serializer = ChangeISOInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        iso = serializer.validated_data["iso"]
        boot = bool(iso) and serializer.validated_data["boot"]
        return accepted(actions.change_iso(vm, request.user, iso, boot=boot))

    @extend_schema(tags=["admin"], request=AddAddressInput, responses={202: OperationSerializer})
    @action(
        detail=True, methods=["post"], url_path="addresses", url_name="addresses", permission_classes=STAFF
    )
    def add_address(self, request, uuid=None):
        """Staff: give the VM one more IPv4 address or IPv6 network. The VM's filter follows at once, the
        guest at its next start (shut down, then start)."""
        vm = self.get_object()
        serializer = AddAddressInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        return accepted(actions.add_address(vm, request.user, serializer.validated_data["family"]))

    @extend_schema(tags=["admin"], request=None, responses={202: OperationSerializer})
    @action(
        detail=True,
        methods=["delete"],
        url_path=r"addresses/(?P<address_id>\d+)",
        url_name="address",
        permission_classes=STAFF,
    )
    def remove_address(self, request, uuid=None, address_id=None):
        """Staff: take an address back from the VM; it cools down before anyone else gets it."""
        vm = self.get_object()
        address = get_object_or_404(Address, pk=address_id, interface__vm=vm)
        return accepted(actions.remove_address(vm, request.user, address))

    @extend_schema(request=SetPTRInput, responses={200: AddressSerializer})
    @action(
        detail=True, methods=["put"], url_path=r"addresses/(?P<address_id>\d+)/ptr", url_name="address_ptr"
    )
    def set_ptr(self, request, uuid=None, address_id=None):
        """Set the reverse DNS name (PTR) of one of the VM's addresses. The DNS server gets it within
        seconds; while it is away the change waits (ptr_pending) and is sent again."""
        vm = self.get_object()
        address = get_object_or_404(Address, pk=address_id, interface__vm=vm)
        serializer = SetPTRInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            actions.set_reverse_dns(vm, request.user, address, serializer.validated_data["ptr"])
        except DjangoValidationError as error:
            raise ValidationError({"ptr": error.messages}) from None
        address.refresh_from_db()
        return Response(AddressSerializer(address).data)

    @extend_schema(request=None, responses={200: ConsoleTokenSerializer})
    @action(detail=True, methods=["post"], url_path="console-token", url_name="console_token")
    def console_token(self, request, uuid=None):
        """A one-time ticket (valid for seconds) for the VM's graphical console, bound to you and the VM."""
        vm = self.get_object()
        if vm.state != VMState.RUNNING:
            raise actions.ActionRefused(f"The VM is {vm.get_state_display().lower()}.")
        ticket = console_tokens.issue(request.user, vm)
        return Response({"url": console_tokens.bridge_url(request, ticket)})

    @extend_schema(
        parameters=[OpenApiParameter("range", OpenApiTypes.STR, enum=list(usage.RANGES), default="hour")],
        responses={200: UsageSerializer},
    )
    @action(detail=True, methods=["get"])
    def usage(self, request, uuid=None):
        """CPU, memory, disk and network use over the last hour, day or month (from stored readings)."""
        vm = self.get_object()
        range_name = request.query_params.get("range", "hour")
        if range_name not in usage.RANGES:
            raise ValidationError({"range": [f"Use one of: {', '.join(usage.RANGES)}."]})
        series = usage.series(VMUsage.objects.filter(vm=vm), range_name)
        return Response({**series, "memory_total": vm.plan.memory_mib * 1024 * 1024})

    @extend_schema(responses={200: OperationSerializer(many=True)}, filters=False)
    @action(detail=True, methods=["get"], filterset_class=None, search_fields=None, ordering_fields=None)
    def operations(self, request, uuid=None):
        """The VM's operations, newest first."""
        vm = self.get_object()
        page = self.paginate_queryset(vm.operations.select_related("user", "vm"))
        return self.get_paginated_response(OperationSerializer(page, many=True).data)


@extend_schema(tags=["operations"])
class OperationViewSet(RateLimitedFirst, viewsets.ReadOnlyModelViewSet):
    """Operations on the VMs you may see (deleted VMs' too), newest first."""

    serializer_class = OperationSerializer
    filterset_class = OperationFilter
    ordering_fields = ["created_at"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Operation.objects.none()
        vms = VirtualMachine.objects.visible_to(self.request.user, include_deleted=True)
        return Operation.objects.filter(vm__in=vms).select_related("vm", "user")
