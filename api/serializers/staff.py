"""The staff's backoffice work: nodes, plans, images, users (quotas, suspension)."""

from urllib.parse import urlsplit

from django.contrib.auth import get_user_model
from rest_framework import serializers
from rest_framework.validators import UniqueValidator

from images.forms import ImageForm
from images.models import Image
from nodes import remote
from nodes.choices import NetworkMode, VirtType
from nodes.models import Node
from vms.models import Plan

from .. import quota
from .account import QuotaSerializer
from .forms import FormValidated

# Remote nodes over SSH or TLS only (never qemu+tcp: unauthenticated and unencrypted).
NODE_URI_SCHEMES = ("qemu", "qemu+ssh", "qemu+tls", "qemu+unix")  # never qemu+tcp
MAX_QUOTA = 2**31 - 1  # the quota fields are PositiveIntegerField


class NodeSerializer(serializers.ModelSerializer):
    vm_count = serializers.IntegerField(read_only=True, source="_vm_count")
    stray_domain_count = serializers.SerializerMethodField()

    class Meta:
        model = Node
        fields = [
            "id",
            "name",
            "uri",
            "status",
            "virt_type",
            "pool_name",
            "network_name",
            "network_mode",
            "bridge",
            "network_problem",
            "console_host",
            "hostname",
            "cpus",
            "memory_mib",
            "storage_capacity_bytes",
            "storage_available_bytes",
            "libvirt_version",
            "last_seen_at",
            "last_error",
            "reconciled_at",
            "stray_domain_count",
            "vm_count",
            "draining",
            "drain_note",
            "migration_uri",
            "disks_uri",
            "ssh_host_key_fingerprint",
        ]
        read_only_fields = ["draining", "drain_note"]

    def get_stray_domain_count(self, node) -> int:
        return len(node.stray_domains)


class RegisterNodeInput(serializers.Serializer):
    name = serializers.RegexField(
        r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        max_length=64,
        validators=[UniqueValidator(Node.objects.all(), message="A node has this name already.")],
        help_text="Also names the node's Celery queue (node.<name>).",
    )
    uri = serializers.CharField(
        max_length=255,
        validators=[UniqueValidator(Node.objects.all(), message="A node has this URI already.")],
        help_text="qemu:///system, qemu+ssh://user@host/system or qemu+tls://host/system.",
    )
    pool_name = serializers.RegexField(r"^[A-Za-z0-9_.-]{1,64}$", required=False)
    pool_path = serializers.RegexField(r"^/[A-Za-z0-9_./-]{0,250}$", required=False)
    network_name = serializers.RegexField(r"^[A-Za-z0-9_.-]{1,64}$", required=False)
    virt_type = serializers.ChoiceField(choices=[*VirtType.values, "auto"], required=False)
    network_mode = serializers.ChoiceField(choices=NetworkMode.values, required=False)
    bridge = serializers.RegexField(
        r"^[A-Za-z0-9_.-]{1,15}$",
        required=False,
        help_text="Bridged mode: the host's existing bridge (e.g. br0).",
    )

    ssh_host_key_fingerprint = serializers.CharField(
        required=False,
        max_length=100,
        help_text="qemu+ssh nodes: the fingerprint of the node's SSH host key (SHA256:…, as "
        "`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` prints it on the node). The panel reads the "
        "key the node presents and pins it only if it matches; without it, the answer says what it read.",
    )

    def validate(self, data):
        if data.get("network_mode") == NetworkMode.BRIDGED and not data.get("bridge"):
            raise serializers.ValidationError({"bridge": "Bridged mode needs the name of the host's bridge."})
        if remote.is_ssh(data.get("uri", "")):
            data["host_key"] = self._confirmed_host_key(data["uri"], data.get("ssh_host_key_fingerprint", ""))
        return data

    @staticmethod
    def _confirmed_host_key(uri: str, typed: str) -> remote.HostKey:
        try:
            found = remote.scan_host_key(uri)
        except remote.HostKeyProblem as problem:
            raise serializers.ValidationError(
                {"uri": f"Could not read the node's SSH host key: {problem}"}
            ) from None
        if typed.strip() != found.fingerprint:
            raise serializers.ValidationError(
                {
                    "ssh_host_key_fingerprint": f"The node presents the {found.key.split()[0]} host key "
                    f"{found.fingerprint}: compare it with the node's own, and send it back to pin it."
                }
            )
        return found

    def validate_uri(self, uri: str) -> str:
        scheme = urlsplit(uri).scheme
        if scheme not in NODE_URI_SCHEMES or "://" not in uri:
            raise serializers.ValidationError(
                f"Use a libvirt URI with one of: {', '.join(NODE_URI_SCHEMES)} (never qemu+tcp)."
            )
        return uri


class StaffPlanSerializer(serializers.ModelSerializer):
    vcpus = serializers.IntegerField(min_value=1, max_value=1024)
    memory_mib = serializers.IntegerField(min_value=64, max_value=16 * 1024 * 1024)
    disk_gb = serializers.IntegerField(min_value=1, max_value=1024 * 1024)

    class Meta:
        model = Plan
        fields = ["id", "name", "vcpus", "memory_mib", "disk_gb", "full_copy", "max_firewall_rules", "active"]


class StaffImageSerializer(serializers.ModelSerializer):
    progress_percent = serializers.IntegerField(read_only=True, allow_null=True)
    source_url = serializers.CharField(read_only=True, help_text="Empty for an image named by its volume.")

    class Meta:
        model = Image
        fields = [
            "id",
            "name",
            "os_family",
            "format",
            "status",
            "progress_percent",
            "downloaded_bytes",
            "total_bytes",
            "error",
            "size_bytes",
            "source_url",
            "checksum_sha256",
            "volume_name",
            "min_disk_gb",
            "default_user",
            "cloud_init",
            "rescue",
            "active",
            "created_at",
        ]
        read_only_fields = fields


class AddImageInput(FormValidated):
    """Add an image by URL (downloaded and checked by a task) or name a volume already in the pools."""

    form_class = ImageForm

    name = serializers.CharField(max_length=100)
    os_family = serializers.ChoiceField(choices=Image.OSFamily.choices, required=False)
    source_url = serializers.CharField(max_length=2000, required=False, allow_blank=True)
    checksum_sha256 = serializers.CharField(max_length=64, required=False, allow_blank=True)
    volume_name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    min_disk_gb = serializers.IntegerField(min_value=1, max_value=1024 * 1024, required=False)
    default_user = serializers.CharField(max_length=32, required=False)
    cloud_init = serializers.BooleanField(required=False)
    rescue = serializers.BooleanField(required=False)
    active = serializers.BooleanField(required=False)

    def validate(self, attrs):
        # A model form fills in the model's defaults only for fields it was given.
        defaults = {"os_family": Image.OSFamily.DEBIAN, "min_disk_gb": 2, "default_user": "debian"}
        defaults.update(cloud_init=True, active=True, rescue=False)
        super().validate({**defaults, **attrs})
        return self.form.instance


class UserSerializer(serializers.ModelSerializer):
    suspended = serializers.BooleanField(source="is_suspended", read_only=True)
    email = serializers.CharField(read_only=True, help_text="May be empty.")
    max_vms = serializers.IntegerField(min_value=0, max_value=MAX_QUOTA, allow_null=True, required=False)
    max_vcpus = serializers.IntegerField(min_value=0, max_value=MAX_QUOTA, allow_null=True, required=False)
    max_memory_mib = serializers.IntegerField(
        min_value=0, max_value=MAX_QUOTA, allow_null=True, required=False
    )
    max_disk_gb = serializers.IntegerField(min_value=0, max_value=MAX_QUOTA, allow_null=True, required=False)

    class Meta:
        model = get_user_model()
        fields = [
            "id",
            "username",
            "email",
            "is_staff",
            "is_active",
            "suspended",
            "suspended_at",
            "suspension_reason",
            "date_joined",
            "last_login",
            "max_vms",
            "max_vcpus",
            "max_memory_mib",
            "max_disk_gb",
        ]
        # Only the quota fields change here; suspension has its own endpoints, the rest the backoffice.
        read_only_fields = [name for name in fields if not name.startswith("max_")]


class UserDetailSerializer(UserSerializer):
    """One account, with its usage against its limits (a query per account: not in lists)."""

    quota = serializers.SerializerMethodField()

    class Meta(UserSerializer.Meta):
        fields = [*UserSerializer.Meta.fields, "quota"]

    def get_quota(self, user) -> QuotaSerializer:
        return quota.of(user)


class SuspendInput(serializers.Serializer):
    reason = serializers.CharField(max_length=200, required=False, allow_blank=True)


class MaintenanceInput(serializers.Serializer):
    on = serializers.BooleanField(
        help_text="true: no new VMs go to the node (its VMs run on); false: they may again."
    )


class MigrateInput(serializers.Serializer):
    target_node = serializers.PrimaryKeyRelatedField(
        queryset=Node.objects.all(), help_text="The id of the node to move the VM to."
    )
