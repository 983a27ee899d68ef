"""The backoffice's view of backups: every store with its usage and last check, every failed backup."""

from django.contrib import admin, messages
from django.db.models import Count, Q
from django.template.defaultfilters import filesizeformat
from django.utils.html import format_html
from django.utils.text import Truncator

from .choices import BackupStatus
from .models import Backup, BackupSchedule, BackupStore
from .tasks import check_store


@admin.register(BackupStore)
class BackupStoreAdmin(admin.ModelAdmin):
    list_display = ["store", "kind", "location", "usage", "backups", "failed_backups", "last_check"]
    readonly_fields = ["used_bytes", "checked_at", "check_ok", "check_message"]
    actions = ["check_now"]
    fieldsets = [
        (None, {"fields": ["name", "kind", "path", "is_default"]}),
        ("SSH (sftp stores)", {"fields": ["host", "port", "username", "ssh_private_key", "ssh_known_hosts"]}),
        ("State", {"fields": ["used_bytes", "checked_at", "check_ok", "check_message"]}),
    ]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                complete=Count("backups", filter=Q(backups__status=BackupStatus.SUCCEEDED)),
                failed=Count("backups", filter=Q(backups__status=BackupStatus.FAILED)),
            )
        )

    @admin.display(description="store", ordering="name")
    def store(self, store):
        return f"{store.name} (default)" if store.is_default else store.name

    @admin.display(description="where")
    def location(self, store):
        where = store.path
        if store.kind != "directory":
            port = "" if store.port == 22 else f" (port {store.port})"
            where = f"{store.username}@{store.host}:{store.path}{port}"
        return format_html(
            '<span style="word-break:break-all;display:inline-block;max-width:16em">{}</span>', where
        )

    @admin.display(description="used", ordering="used_bytes")
    def usage(self, store):
        return filesizeformat(store.used_bytes) if store.used_bytes is not None else "not checked yet"

    @admin.display(description="backups", ordering="complete")
    def backups(self, store):
        return store.complete

    @admin.display(description="failed", ordering="failed")
    def failed_backups(self, store):
        if not store.failed:
            return 0
        url = f"../backup/?status__exact=failed&store__id__exact={store.pk}"
        return format_html('<a href="{}" class="text-danger"><strong>{}</strong></a>', url, store.failed)

    @admin.display(description="last check", ordering="checked_at")
    def last_check(self, store):
        if store.checked_at is None:
            return "never"
        when = store.checked_at.strftime("%Y-%m-%d %H:%M")
        if store.check_ok:
            return format_html("✔ {}", when)
        return format_html(
            '<div style="color:#b00;max-width:22em" title="{}"><strong>FAILED</strong> {}<br>{}</div>',
            store.check_message,
            when,
            Truncator(store.check_message).chars(90),
        )

    @admin.action(description="Check the selected stores now")
    def check_now(self, request, queryset):
        for store in queryset:
            ok = check_store(store)
            self.message_user(
                request,
                f"{store}: {'no errors' if ok else store.check_message}",
                messages.INFO if ok else messages.ERROR,
            )


@admin.register(Backup)
class BackupAdmin(admin.ModelAdmin):
    # The rest: on its page.
    list_display = ["created_at", "vm", "owner", "store", "kind", "read", "status", "reason"]
    list_filter = ["status", "kind", "incremental", "store"]
    search_fields = ["vm__hostname", "vm__uuid", "vm__owner__username"]
    list_select_related = ["vm__owner", "store"]
    readonly_fields = [f.name for f in Backup._meta.fields]

    def has_add_permission(self, request):
        return False  # backups are asked for on the VM's page or by its schedule

    @admin.display(description="owner")
    def owner(self, backup):
        return backup.vm.owner

    @admin.display(description="read from the node")
    def read(self, backup):
        if backup.status != "succeeded":
            return ""
        read, added = filesizeformat(backup.bytes_read), filesizeformat(backup.bytes_added)
        return f"{backup.read_kind}: {read}, +{added} stored"

    @admin.display(description="why it failed")
    def reason(self, backup):
        if not backup.error:
            return ""
        return format_html(
            '<div style="max-width:24em;color:#b00" title="{}">{}</div>',
            backup.error,
            Truncator(backup.error).chars(110),
        )


@admin.register(BackupSchedule)
class BackupScheduleAdmin(admin.ModelAdmin):
    list_display = ["vm", "frequency", "at", "keep_last", "store", "enabled", "next_run_at"]
    list_select_related = ["vm", "store"]
