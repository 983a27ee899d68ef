from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from .models import AuditEntry, SSHKey, User


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records staff may read and search, but nobody adds, changes or deletes from any page."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(User)
class PanelUserAdmin(UserAdmin):
    list_display = ("username", "email", "is_staff", "is_active", "vm_count", "last_login", "date_joined")
    list_filter = ("is_staff", "is_superuser", "is_active")
    fieldsets = (
        *UserAdmin.fieldsets,
        (
            "Quota (empty: the panel's defaults)",
            {"fields": ("max_vms", "max_vcpus", "max_memory_mib", "max_disk_gb")},
        ),
    )

    def get_queryset(self, request):
        from django.db.models import Count, Q

        return (
            super()
            .get_queryset(request)
            .annotate(_vm_count=Count("vms", filter=Q(vms__deleted_at__isnull=True)))
        )

    @admin.display(description="VMs", ordering="_vm_count")
    def vm_count(self, user):
        return user._vm_count


@admin.register(SSHKey)
class SSHKeyAdmin(admin.ModelAdmin):
    """Staff may look up, rename and remove keys; only their owner adds them (through the validation)."""

    list_display = ("user", "name", "fingerprint", "created_at")
    list_select_related = ("user",)
    search_fields = ("user__username", "user__email", "fingerprint")
    fields = ("user", "name", "public_key", "fingerprint", "created_at")
    # The key text is the customer's: changing it here would bypass parse_public_key.
    readonly_fields = ("user", "public_key", "fingerprint", "created_at")

    def has_add_permission(self, request):
        return False


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    """Searchable by staff; never added, changed or deleted from any page."""

    list_display = ("at", "actor_name", "action", "target_label", "outcome", "address", "owner")
    list_filter = ("outcome", "action", "target_type")
    search_fields = (
        "actor_name",
        "action",
        "target_label",
        "target_id",
        "address",
        "detail",
        "owner__username",
    )
    date_hierarchy = "at"
    list_select_related = ("owner",)
