"""The backoffice's node pages: the node's facts as libvirt last reported them, its strays and graphs."""

from urllib.parse import urlsplit

from django import forms
from django.contrib import admin
from django.db import transaction
from django.db.models import Count, Q

from accounts.admin import AuditedAdmin
from kvmpanel.units import gib

from . import remote
from .choices import NodeStatus
from .models import Node
from .tasks import refresh_one_node, register_one_node

ALLOWED_SCHEMES = ("qemu", "qemu+ssh", "qemu+tls", "qemu+unix")


class NodeForm(forms.ModelForm):
    """A node's URI is qemu+ssh:// or qemu+tls:// (or the local socket), never qemu+tcp://; an SSH
    node's host key is read and shown, and pinned only once staff typed its fingerprint back."""

    confirm_fingerprint = forms.CharField(
        label="Confirm the host key",
        required=False,
        help_text="qemu+ssh nodes: the fingerprint of the node's SSH host key, as "
        "<code>ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub</code> prints it on the node.",
    )

    class Meta:
        model = Node
        fields = (
            "name",
            "uri",
            "status",
            "virt_type",
            "pool_name",
            "network_mode",
            "bridge",
            "network_name",
            "console_host",
            "migration_uri",
            "disks_uri",
        )

    def clean_uri(self):
        uri = self.cleaned_data["uri"]
        if urlsplit(uri).scheme not in ALLOWED_SCHEMES or "://" not in uri:
            raise forms.ValidationError(
                "Use qemu+ssh://user@host/system or qemu+tls://host/system (or qemu:///system for this "
                "machine). qemu+tcp:// is refused: it is neither encrypted nor authenticated."
            )
        return uri

    def clean(self):
        data = super().clean()
        uri = data.get("uri")
        self.host_key = None
        if not uri or not remote.is_ssh(uri):
            return data
        if self.instance.pk and self.instance.uri == uri and self.instance.ssh_host_key:
            typed = (data.get("confirm_fingerprint") or "").strip()
            if not typed:
                return data  # the pinned key stays
        try:
            found = remote.scan_host_key(uri)
        except remote.HostKeyProblem as problem:
            raise forms.ValidationError(f"Could not read the node's SSH host key: {problem}") from None
        typed = (data.get("confirm_fingerprint") or "").strip()
        if typed != found.fingerprint:
            raise forms.ValidationError(
                {
                    "confirm_fingerprint": f"The node presents the {found.key.split()[0]} host key "
                    f"{found.fingerprint}. Compare it with the node's own (on the node: ssh-keygen -lf "
                    "/etc/ssh/ssh_host_ed25519_key.pub) and type it here to pin it."
                }
            )
        self.host_key = found
        return data


@admin.register(Node)
class NodeAdmin(AuditedAdmin):
    form = NodeForm
    list_display = (
        "name",
        "uri",
        "status",
        "virt_type",
        "network_mode",
        "cpus",
        "memory_mib",
        "storage",
        "vm_count",
        "last_seen_at",
    )
    list_filter = ("status", "virt_type", "network_mode")
    search_fields = ("name", "uri", "hostname")
    readonly_fields = (
        "hostname",
        "cpus",
        "memory_mib",
        "storage",
        "libvirt_version",
        "last_seen_at",
        "last_error",
        "network_problem",
        "reconciled_at",
        "stray_count",
        "draining",
        "drain_note",
    )
    fieldsets = (
        (None, {"fields": ("name", "uri", "status", "virt_type", "pool_name")}),
        ("Remote access", {"fields": ("ssh_host_key_fingerprint", "confirm_fingerprint")}),
        ("Network", {"fields": ("network_mode", "bridge", "network_name", "console_host")}),
        ("Moves to this node", {"fields": ("migration_uri", "disks_uri")}),
        ("As libvirt last reported", {"fields": readonly_fields}),
    )

    def get_fieldsets(self, request, obj=None):
        # A node being added has no facts yet: no block of zeros, only what the operator gives.
        return self.fieldsets if obj is not None else self.fieldsets[:2]

    def get_readonly_fields(self, request, obj=None):
        return (*self.readonly_fields, "ssh_host_key_fingerprint")

    def save_model(self, request, obj, form, change):
        network_changed = {"network_mode", "bridge"} & set(form.changed_data)
        if network_changed:
            obj.network_problem = "Checking the host's network for this mode…"
        if not change:
            # No VM is placed on it until a worker has prepared it (pool, network, checks).
            obj.status = NodeStatus.UNREACHABLE
            obj.last_error = "Registering: waiting for the node to answer."
        host_key = getattr(form, "host_key", None)
        if host_key is not None:
            obj.ssh_host_key, obj.ssh_host_key_fingerprint = host_key.key, host_key.fingerprint
        super().save_model(request, obj, form, change)
        if host_key is not None:
            remote.write_known_hosts(obj)
        if not change:
            transaction.on_commit(lambda: register_one_node.delay(obj.pk))
        elif network_changed or host_key is not None:
            # The check talks to the node: a worker does it, never the request.
            transaction.on_commit(lambda: refresh_one_node.delay(obj.pk))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra = {"panel_public_key": remote.public_key(), "tls_files": remote.tls_files()}
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})

    def add_view(self, request, form_url="", extra_context=None):
        extra = {"panel_public_key": remote.public_key(), "tls_files": remote.tls_files()}
        return super().add_view(request, form_url, {**extra, **(extra_context or {})})

    @admin.display(description="domains no VM owns")
    def stray_count(self, node):
        return len(node.stray_domains)

    @admin.display(description="storage free")
    def storage(self, node):
        return f"{gib(node.storage_available_bytes)} of {gib(node.storage_capacity_bytes)}"

    def get_queryset(self, request):
        # One query for the list, not one count per node row.
        # "deleted" is the VMs app's state for a VM that is gone (nodes never import vms).
        live_vms = Count("vms", filter=~Q(vms__state="deleted"))
        return super().get_queryset(request).annotate(_vm_count=live_vms)

    @admin.display(description="VMs", ordering="_vm_count")
    def vm_count(self, node):
        return node._vm_count
