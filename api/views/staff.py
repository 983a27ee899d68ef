"""Staff endpoints (/api/v1/admin/…): customers get 403. The same domain functions as the backoffice."""

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Count, Q
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from accounts import audit, suspension
from images import actions as image_actions
from images.models import Image
from nodes import remote
from nodes.choices import NodeStatus
from nodes.models import Node
from vms import actions as vm_actions
from vms import draining
from vms.choices import VMState
from vms.models import Plan, VirtualMachine

from ..filters import UserFilter
from ..permissions import STAFF
from ..serializers.staff import (
    AddImageInput,
    MaintenanceInput,
    MigrateInput,
    NodeSerializer,
    RegisterNodeInput,
    StaffImageSerializer,
    StaffPlanSerializer,
    SuspendInput,
    UserDetailSerializer,
    UserSerializer,
)
from ..serializers.vms import OperationSerializer
from ..tasks import register_node_task
from .base import RateLimitedFirst


class StaffViewSet(RateLimitedFirst, viewsets.GenericViewSet):
    permission_classes = STAFF


@extend_schema(tags=["admin"])
class NodeViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, StaffViewSet):
    """Hypervisor nodes, as libvirt last reported them."""

    serializer_class = NodeSerializer
    search_fields = ["name", "uri", "hostname"]
    ordering_fields = ["name", "status"]

    def get_queryset(self):
        live_vms = Count("vms", filter=~Q(vms__state=VMState.DELETED))
        return Node.objects.annotate(_vm_count=live_vms).order_by("name")

    @extend_schema(request=RegisterNodeInput, responses={202: NodeSerializer})
    def create(self, request):
        """Register a node: recorded at once (unreachable), prepared by a worker, online when it answers."""
        given = RegisterNodeInput(data=request.data)
        given.is_valid(raise_exception=True)
        data = given.validated_data
        host_key = data.get("host_key")
        node = Node.objects.create(
            name=data["name"],
            uri=data["uri"],
            ssh_host_key=host_key.key if host_key else "",
            ssh_host_key_fingerprint=host_key.fingerprint if host_key else "",
            status=NodeStatus.UNREACHABLE,  # no VM is placed on it until the worker has prepared it
            last_error="Registering: waiting for the node to answer.",
            **{
                key: data[key]
                for key in ("pool_name", "network_name", "network_mode", "bridge")
                if key in data
            },
        )
        if host_key:
            remote.write_known_hosts(node)  # only this key is accepted from the first connection on
        audit.record("node.register", node, outcome="requested", detail=node.uri)
        pool_path, virt_type = data.get("pool_path"), data.get("virt_type")
        transaction.on_commit(lambda: register_node_task.delay(node.pk, pool_path, virt_type))
        node._vm_count = 0
        return Response(NodeSerializer(node).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=MaintenanceInput, responses={200: NodeSerializer})
    @action(detail=True, methods=["post"])
    def maintenance(self, request, pk=None):
        """Put the node in maintenance (no new VMs; its VMs run on, their customers see no change) or
        take it out (which also stops a drain)."""
        node = self.get_object()
        given = MaintenanceInput(data=request.data)
        given.is_valid(raise_exception=True)
        draining.set_maintenance(node, request.user, given.validated_data["on"])
        return Response(NodeSerializer(self.get_object()).data)

    @extend_schema(request=None, responses={202: NodeSerializer})
    @action(detail=True, methods=["post"])
    def drain(self, request, pk=None):
        """Put the node in maintenance and move every VM off it, a few at a time (each a migrate
        operation: follow them on the VMs' operations)."""
        node = self.get_object()
        draining.start(node, request.user)
        return Response(NodeSerializer(self.get_object()).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={200: NodeSerializer})
    @action(detail=True, methods=["post"], url_path="stop-drain")
    def stop_drain(self, request, pk=None):
        """Ask for no more moves; those under way finish, and the node stays in maintenance."""
        node = self.get_object()
        draining.stop(node, request.user)
        return Response(NodeSerializer(self.get_object()).data)


@extend_schema(tags=["admin"])
class StaffVMViewSet(StaffViewSet):
    """Staff verbs on any customer's VM."""

    queryset = VirtualMachine.objects.live().select_related("node", "plan", "image", "owner")
    lookup_field = "uuid"
    serializer_class = OperationSerializer

    @extend_schema(request=MigrateInput, responses={202: OperationSerializer})
    @action(detail=True, methods=["post"])
    def migrate(self, request, uuid=None):
        """Move the VM to another node: live with its local disk if it runs, by a copy of its disk if
        stopped. The operation's progress and, once done, its downtime show on the VM's operations."""
        vm = self.get_object()
        given = MigrateInput(data=request.data)
        given.is_valid(raise_exception=True)
        operation = vm_actions.migrate(vm, request.user, given.validated_data["target_node"])
        return Response(OperationSerializer(operation).data, status=status.HTTP_202_ACCEPTED)


@extend_schema(tags=["admin"])
class StaffPlanViewSet(RateLimitedFirst, viewsets.ModelViewSet):
    """Every plan, active or not. A plan that VMs use cannot be deleted (409): deactivate it."""

    permission_classes = STAFF
    queryset = Plan.objects.all()
    serializer_class = StaffPlanSerializer
    search_fields = ["name"]
    ordering_fields = ["name", "vcpus", "memory_mib", "disk_gb"]

    def perform_create(self, serializer):
        plan = serializer.save()
        audit.record("plan.add", plan, outcome="succeeded")

    def perform_update(self, serializer):
        plan = serializer.save()
        audit.record("plan.change", plan, outcome="succeeded")

    def perform_destroy(self, plan):
        audit.record("plan.delete", plan, outcome="succeeded")
        plan.delete()


@extend_schema(tags=["admin"])
class StaffImageViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, StaffViewSet
):
    """Every image with its download status. Add one by URL; one that VMs use cannot be deleted (409)."""

    queryset = Image.objects.all()
    serializer_class = StaffImageSerializer
    search_fields = ["name", "volume_name", "source_url"]
    ordering_fields = ["name", "created_at", "status"]
    filterset_fields = ["status", "format", "active", "rescue"]

    @extend_schema(request=AddImageInput, responses={201: StaffImageSerializer})
    def create(self, request):
        """Add an image by URL (a worker downloads, checks and places it on every node) or volume name."""
        given = AddImageInput(data=request.data)
        given.is_valid(raise_exception=True)
        image = given.validated_data
        image_actions.add_image(image)
        return Response(StaffImageSerializer(image).data, status=status.HTTP_201_CREATED)

    def perform_destroy(self, image):
        image_actions.delete_image(image)


@extend_schema(tags=["admin"])
class UserViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, StaffViewSet):
    """Accounts: their quotas (PATCH the max_* fields; null means the panel's default) and suspension."""

    filterset_class = UserFilter
    search_fields = ["username", "email"]
    ordering_fields = ["username", "date_joined", "last_login"]

    def get_queryset(self):
        return get_user_model().objects.order_by("username")

    def get_serializer_class(self):
        return UserSerializer if self.action == "list" else UserDetailSerializer

    def partial_update(self, request, pk=None):
        """Change the account's limits (max_*; null: the panel's defaults). Nothing else changes here."""
        serializer = self.get_serializer(self.get_object(), data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        user = serializer.save()
        limits = ", ".join(f"{name}: {value}" for name, value in serializer.validated_data.items())
        audit.record("account.quota", user, outcome="succeeded", owner=user, detail=limits)
        return Response(serializer.data)

    @extend_schema(request=SuspendInput, responses={200: UserDetailSerializer})
    @action(detail=True, methods=["post"])
    def suspend(self, request, pk=None):
        """Suspend the account: sign-in, sessions and tokens refused; its running VMs are shut down."""
        user = self.get_object()
        given = SuspendInput(data=request.data)
        given.is_valid(raise_exception=True)
        if user.is_suspended:
            raise suspension.SuspensionRefused(f"{user} is suspended already.")
        suspension.suspend(user, by=request.user, reason=given.validated_data.get("reason", ""))
        return Response(UserDetailSerializer(user).data)

    @extend_schema(request=None, responses={200: UserDetailSerializer})
    @action(detail=True, methods=["post"])
    def unsuspend(self, request, pk=None):
        """Let the account sign in again; its VMs stay stopped until started."""
        user = self.get_object()
        if not user.is_suspended:
            raise suspension.SuspensionRefused(f"{user} is not suspended.")
        suspension.unsuspend(user, by=request.user)
        return Response(UserDetailSerializer(user).data)
