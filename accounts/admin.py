import json

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.contrib.auth.admin import UserAdmin

from . import audit, suspension
from .models import AuditEntry, SSHKey, User


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records staff may read and search, but nobody adds, changes or deletes from any page."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class AuditedAdmin(admin.ModelAdmin):
    """Backoffice changes go to the audit log like every other change: who, what, which fields.

    Hooked where Django's admin writes its own history (log_*), so every add,
    change (password changes too) and delete, single or bulk, is recorded.
    Only field names are written, never their values.
    """

    def log_addition(self, request, obj, message):
        self._audit(obj, "add", message)
        return super().log_addition(request, obj, message)

    def log_change(self, request, obj, message):
        self._audit(obj, "change", message)
        return super().log_change(request, obj, message)

    def log_deletions(self, request, queryset):
        for obj in queryset:
            self._audit(obj, "delete", [])
        return super().log_deletions(request, queryset)

    def _audit(self, obj, verb: str, message) -> None:
        from django.contrib.admin.models import LogEntry

        summary = LogEntry(change_message=json.dumps(message) if message else "").get_change_message()
        owner = obj if isinstance(obj, User) else None  # a customer sees what staff changed on their account
        detail = " ".join(part for part in (summary, self.audit_detail(obj)) if part)
        audit.record(f"{obj._meta.model_name}.{verb}", obj, outcome="succeeded", owner=owner, detail=detail)

    def audit_detail(self, obj) -> str:
        """More for the log than the change message says (e.g. an image's source)."""
        return ""


class SuspendActionForm(ActionForm):
    reason = forms.CharField(required=False, max_length=200, label="Reason (for suspending)")


class SuspendedFilter(admin.SimpleListFilter):
    title = "suspended"
    parameter_name = "suspended"

    def lookups(self, request, model_admin):
        return (("yes", "Yes"), ("no", "No"))

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(suspended_at__isnull=self.value() == "no")
        return queryset


@admin.register(User)
class PanelUserAdmin(AuditedAdmin, UserAdmin):
    list_display = ("username", "email", "is_staff", "suspended", "vm_count", "last_login", "date_joined")
    list_filter = ("is_staff", "is_superuser", SuspendedFilter, "is_active")
    fieldsets = (
        *UserAdmin.fieldsets,
        (
            "Quota (empty: the panel's defaults)",
            {"fields": ("max_vms", "max_vcpus", "max_memory_mib", "max_disk_gb")},
        ),
        ("Suspension (the Suspend action on the list)", {"fields": ("suspended_at", "suspension_reason")}),
    )
    readonly_fields = ("suspended_at", "suspension_reason")
    action_form = SuspendActionForm
    actions = ["suspend", "unsuspend"]

    @admin.display(description="suspended", boolean=True, ordering="suspended_at")
    def suspended(self, user):
        return user.is_suspended

    @admin.action(description="Suspend selected accounts (sign-in refused, VMs stopped)")
    def suspend(self, request, queryset):
        reason = request.POST.get("reason", "")
        for user in queryset.filter(suspended_at__isnull=True):
            try:
                stopping = suspension.suspend(user, by=request.user, reason=reason)
            except suspension.SuspensionRefused as refusal:
                messages.error(request, f"{user}: {refusal}")
            else:
                messages.success(request, f"Suspended {user}; stopping {stopping} VM(s).")

    @admin.action(description="Lift the suspension of selected accounts")
    def unsuspend(self, request, queryset):
        for user in queryset.filter(suspended_at__isnull=False):
            suspension.unsuspend(user, by=request.user)
            messages.success(request, f"{user} can sign in again; their VMs stay stopped until started.")

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
class SSHKeyAdmin(AuditedAdmin):
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


# The panel's internals (sign-in throttling, two-factor devices, permission groups) are for superusers:
# other staff never see them in the backoffice's navigation, nor open their pages.
INTERNAL_APPS = {"axes", "otp_totp", "otp_static", "auth"}


def _superusers_only(admin_class):
    def only_superusers(name):
        def allowed(self, request, *args, **kwargs):
            superuser = request.user.is_active and request.user.is_superuser
            return superuser and getattr(super(subclass, self), name)(request, *args, **kwargs)

        return allowed

    methods = ("has_module_permission", "has_view_permission", "has_add_permission")
    methods += ("has_change_permission", "has_delete_permission")
    subclass = type(
        f"SuperuserOnly{admin_class.__name__}",
        (admin_class,),
        {name: only_superusers(name) for name in methods},
    )
    return subclass


for _model, _model_admin in list(admin.site._registry.items()):
    if _model._meta.app_label in INTERNAL_APPS:
        admin.site.unregister(_model)
        admin.site.register(_model, _superusers_only(type(_model_admin)))
