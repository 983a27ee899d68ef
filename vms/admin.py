"""The staff backoffice: Django admin over nodes, plans, images, VMs and operations."""

from django.contrib import admin, messages
from django.db.models import Count, Q

from . import actions
from .choices import OperationKind, VMState
from .models import Image, Node, Operation, Plan, VirtualMachine
from .templatetags.vm_tags import gib


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "uri",
        "status",
        "virt_type",
        "cpus",
        "memory_mib",
        "storage",
        "vm_count",
        "last_seen_at",
    )
    list_filter = ("status", "virt_type")
    search_fields = ("name", "uri", "hostname")
    readonly_fields = (
        "hostname",
        "cpus",
        "memory_mib",
        "storage",
        "libvirt_version",
        "last_seen_at",
        "last_error",
        "reconciled_at",
        "stray_count",
    )
    fieldsets = (
        (None, {"fields": ("name", "uri", "status", "virt_type", "pool_name", "network_name")}),
        ("As libvirt last reported", {"fields": readonly_fields}),
    )

    @admin.display(description="domains no VM owns")
    def stray_count(self, node):
        return len(node.stray_domains)

    @admin.display(description="storage free")
    def storage(self, node):
        return f"{gib(node.storage_available_bytes)} of {gib(node.storage_capacity_bytes)}"

    def get_queryset(self, request):
        # One query for the list, not one count per node row.
        live_vms = Count("vms", filter=~Q(vms__state=VMState.DELETED))
        return super().get_queryset(request).annotate(_vm_count=live_vms)

    @admin.display(description="VMs", ordering="_vm_count")
    def vm_count(self, node):
        return node._vm_count


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = ("name", "vcpus", "memory_mib", "disk_gb", "active")
    list_filter = ("active",)
    list_editable = ("active",)


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ("name", "os_family", "format", "volume_name", "min_disk_gb", "size", "active")
    list_filter = ("os_family", "format", "active")
    search_fields = ("name", "volume_name")
    readonly_fields = ("checksum_sha256", "size_bytes", "created_at")

    @admin.display(description="size")
    def size(self, image):
        return gib(image.size_bytes)


class OperationInline(admin.TabularInline):
    model = Operation
    extra = 0
    can_delete = False
    fields = ("kind", "status", "user", "attempt", "error", "created_at", "finished_at")
    readonly_fields = fields
    ordering = ("-created_at",)

    def has_add_permission(self, request, obj=None):
        return False


def _power_action(kind: str, label: str):
    @admin.action(description=label)
    def action(modeladmin, request, queryset):
        done = 0
        for vm in queryset.select_related("node"):
            try:
                actions.request(vm, request.user, kind)
                done += 1
            except actions.ActionRefused as refusal:
                modeladmin.message_user(request, f"{vm}: {refusal}", messages.WARNING)
        if done:
            modeladmin.message_user(request, f"{label}: requested for {done} VM(s).", messages.SUCCESS)

    action.__name__ = f"request_{kind}"
    return action


@admin.register(VirtualMachine)
class VirtualMachineAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "state", "node", "plan", "image", "created_at")
    list_filter = ("state", "node", "plan", "image")
    search_fields = ("hostname", "display_name", "uuid", "owner__username", "owner__email")
    list_select_related = ("owner", "node", "plan", "image")
    readonly_fields = ("uuid", "state", "state_changed_at", "created_at", "updated_at", "deleted_at")
    fields = ("uuid", "owner", "display_name", "hostname", "node", "plan", "image", *readonly_fields[1:])
    inlines = [OperationInline]
    actions = [
        _power_action(OperationKind.START, "Start"),
        _power_action(OperationKind.SHUTDOWN, "Shut down"),
        _power_action(OperationKind.FORCE_OFF, "Force off"),
        _power_action(OperationKind.REBOOT, "Reboot"),
    ]

    def get_readonly_fields(self, request, obj=None):
        # Placement and size change through operations (migrate, resize), not by editing rows.
        if obj is not None:
            return (*self.readonly_fields, "owner", "hostname", "node", "plan", "image")
        return self.readonly_fields

    def has_add_permission(self, request):
        return False  # VMs are created through the portal so a task builds them

    def has_delete_permission(self, request, obj=None):
        return False  # deleting removes a disk: it goes through the Delete operation


@admin.register(Operation)
class OperationAdmin(admin.ModelAdmin):
    list_display = ("kind", "vm", "user", "status", "attempt", "created_at", "took")
    list_filter = ("status", "kind")
    search_fields = ("vm__hostname", "vm__uuid", "user__username", "error")
    list_select_related = ("vm", "user")
    date_hierarchy = "created_at"

    @admin.display(description="took")
    def took(self, operation):
        return f"{operation.duration.total_seconds():.1f} s" if operation.duration else "—"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
