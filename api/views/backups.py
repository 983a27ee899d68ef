"""A VM's snapshots and backups (/api/v1/vms/<uuid>/snapshots/, …/backups/), and the stores for staff.

The VM is found as the VM endpoints find it (visible_to: staff all, customers their own; else 404);
every change goes through vms.actions or backups.actions, as the pages' do.
"""

import uuid

from django.http import Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from backups import actions as backup_actions
from backups.models import Backup, BackupStore
from vms import actions
from vms.models import Snapshot, VirtualMachine

from ..permissions import STAFF
from ..serializers.backups import (
    BackupSerializer,
    BackupStoreSerializer,
    RestoreInput,
    SnapshotSerializer,
    TakeSnapshotInput,
)
from ..serializers.vms import OperationSerializer, VMSerializer
from .base import RateLimitedFirst
from .vms import accepted


class _OfOneVM(RateLimitedFirst, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Objects of the VM named in the URL, if the user may see that VM."""

    def vm(self) -> VirtualMachine:
        try:
            vm_uuid = uuid.UUID(self.kwargs["vm_uuid"])
        except ValueError:
            raise Http404("no such VM") from None
        visible = VirtualMachine.objects.visible_to(self.request.user).select_related("node", "plan", "owner")
        return get_object_or_404(visible, uuid=vm_uuid)

    def validated(self, input_class) -> dict:
        serializer = input_class(data=self.request.data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data


@extend_schema(tags=["snapshots"])
class SnapshotViewSet(_OfOneVM):
    """The VM's snapshots, newest first. Taking, reverting and deleting answer 202 with the operation."""

    serializer_class = SnapshotSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Snapshot.objects.none()
        return self.vm().snapshots.all()

    @extend_schema(request=TakeSnapshotInput, responses={202: OperationSerializer})
    def create(self, request, vm_uuid=None):
        """Take a snapshot (a running VM's memory is saved too), within the plan's number."""
        return accepted(
            actions.take_snapshot(self.vm(), request.user, self.validated(TakeSnapshotInput)["description"])
        )

    @extend_schema(responses={202: OperationSerializer})
    def destroy(self, request, vm_uuid=None, pk=None):
        """Delete the snapshot (nothing of the VM's present state is lost)."""
        return accepted(actions.delete_snapshot(self.vm(), request.user, self.get_object()))

    @extend_schema(request=None, responses={202: OperationSerializer})
    @action(detail=True, methods=["post"])
    def revert(self, request, vm_uuid=None, pk=None):
        """Put the VM back to the snapshot: everything written since it was taken is lost."""
        return accepted(actions.revert_snapshot(self.vm(), request.user, self.get_object()))


@extend_schema(tags=["backups"])
class BackupViewSet(_OfOneVM):
    """The VM's backups, newest first (those removed by retention are not listed)."""

    serializer_class = BackupSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Backup.objects.none()
        return self.vm().backups.exclude(status="pruned").select_related("store", "vm")

    @extend_schema(request=None, responses={201: BackupSerializer})
    def create(self, request, vm_uuid=None):
        """Back the VM up now (queued; it starts when its node has a free slot)."""
        backup = backup_actions.start_backup(self.vm(), request.user)
        return Response(BackupSerializer(backup).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=RestoreInput, responses={202: OperationSerializer, 201: VMSerializer})
    @action(detail=True, methods=["post"])
    def restore(self, request, vm_uuid=None, pk=None):
        """Replace the VM's disk with the backup (202, the operation), or restore it as a new VM of the same
        owner on the same plan, within the quota (as_new: 201, the new VM)."""
        vm, backup, data = self.vm(), self.get_object(), self.validated(RestoreInput)
        if data["as_new"]:
            new = backup_actions.restore_as_new(backup, request.user, data["hostname"])
            return Response(
                VMSerializer(new, context={"request": request}).data, status=status.HTTP_201_CREATED
            )
        return accepted(backup_actions.restore(vm, request.user, backup))


@extend_schema(tags=["admin"])
class BackupStoreViewSet(RateLimitedFirst, viewsets.ReadOnlyModelViewSet):
    """Every backup store with its usage and its last check (staff)."""

    permission_classes = STAFF
    serializer_class = BackupStoreSerializer
    queryset = BackupStore.objects.all()


@extend_schema(tags=["admin"])
class StaffBackupViewSet(RateLimitedFirst, viewsets.ReadOnlyModelViewSet):
    """Every backup (staff); ?status=failed lists the failed ones."""

    permission_classes = STAFF
    serializer_class = BackupSerializer
    filterset_fields = ["status", "kind", "store"]

    def get_queryset(self):
        return Backup.objects.select_related("store", "vm")
