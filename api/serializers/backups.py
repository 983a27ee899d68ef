"""Snapshots, backups and backup stores. Never a store's password, key, or a restic command."""

from rest_framework import serializers

from backups.models import Backup, BackupStore
from vms.models import Snapshot
from vms.validators import validate_hostname


class SnapshotSerializer(serializers.ModelSerializer):
    with_memory = serializers.BooleanField(read_only=True, help_text="Taken running: a revert resumes it.")

    class Meta:
        model = Snapshot
        fields = ["id", "description", "created_at", "vm_state", "with_memory"]


class TakeSnapshotInput(serializers.Serializer):
    description = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class BackupSerializer(serializers.ModelSerializer):
    store = serializers.CharField(source="store.name", read_only=True)
    vm = serializers.UUIDField(source="vm.uuid", read_only=True)

    class Meta:
        model = Backup
        fields = [
            "id", "vm", "store", "kind", "incremental", "status", "consistency", "disk_bytes", "bytes_read",
            "bytes_added",
            "progress", "error", "created_at", "started_at", "finished_at",
        ]  # fmt: skip


class RestoreInput(serializers.Serializer):
    as_new = serializers.BooleanField(
        default=False, help_text="Restore as a new VM instead of replacing the disk."
    )
    hostname = serializers.CharField(
        max_length=253, required=False, help_text="The new VM's hostname (as_new)."
    )

    def validate(self, data):
        if data["as_new"]:
            hostname = (data.get("hostname") or "").strip().lower()
            validate_hostname(hostname)
            data["hostname"] = hostname
        return data


class BackupStoreSerializer(serializers.ModelSerializer):
    class Meta:
        model = BackupStore
        fields = [
            "id", "name", "kind", "path", "host", "port", "username", "is_default", "used_bytes",
            "checked_at", "check_ok", "check_message",
        ]  # fmt: skip
