"""The backoffice's address pages: each pool's usage (counted in the database), and every address with
the VM and owner that hold it (the abuse desk's first question)."""

from django.contrib import admin
from django.utils.html import format_html

from accounts.admin import AuditedAdmin

from .choices import AddressStatus
from .models import Address, Pool, readable_count


@admin.register(Pool)
class PoolAdmin(AuditedAdmin):
    list_display = ("name", "prefix", "per_vm", "size", "used", "reserved", "cooling", "free")
    search_fields = ("name", "prefix")  # no filter column: the usage columns need the width
    filter_horizontal = ("nodes",)
    readonly_fields = ("family", "capacity")
    fields = (
        "name",
        "prefix",
        "gateway",
        ("first_address", "last_address"),
        "assign_prefix_length",
        "resolvers",
        "nodes",
        "active",
        "family",
        "capacity",
    )

    def get_queryset(self, request):
        return super().get_queryset(request).with_usage()  # one query for the whole list

    @admin.display(description="per VM")
    def per_vm(self, pool):
        return f"/{pool.unit_prefix_length}"

    @admin.display(description="capacity", ordering="capacity")
    def size(self, pool):
        return readable_count(pool.capacity)

    @admin.display(description="used", ordering="used")
    def used(self, pool):
        return self._addresses_link(pool, pool.used, AddressStatus.ALLOCATED)

    @admin.display(description="reserved", ordering="reserved")
    def reserved(self, pool):
        return self._addresses_link(pool, pool.reserved, AddressStatus.RESERVED)

    @admin.display(description="cooling", ordering="cooling")
    def cooling(self, pool):
        return self._addresses_link(pool, pool.cooling, AddressStatus.COOLING)

    @admin.display(description="free", ordering="free")
    def free(self, pool):
        return readable_count(pool.free)

    @staticmethod
    def _addresses_link(pool, count: int, status: str):
        return format_html(
            '<a href="../address/?pool__id__exact={}&status__exact={}">{}</a>', pool.pk, status, count
        )


@admin.register(Address)
class AddressAdmin(AuditedAdmin):
    """Reserve an address (status "reserved", no VM) here; VMs get theirs from their plan and from the
    VM page's buttons."""

    list_display = ("cidr", "pool", "status", "holder", "owner", "reverse_dns", "assigned_at")
    list_filter = ("status", "pool")
    # The VM's hostname and the owner's name find their addresses too (lookups through the NIC's
    # generic relation: a string, never an import of the VMs app).
    search_fields = ("address", "interface__vm__hostname", "interface__vm__owner__username")
    readonly_fields = (
        "holder",
        "owner",
        "assigned_at",
        "released_at",
        "cooling_until",
        "ptr",
        "ptr_published",
        "ptr_error",
        "ptr_synced_at",
    )
    fields = ("pool", "address", "prefix_length", "status", "description", *readonly_fields)

    @admin.display(description="reverse DNS", ordering="ptr")
    def reverse_dns(self, address):
        """The PTR (the customer sets it on the VM page), and whether PowerDNS has it yet."""
        if not address.ptr_pending:
            return address.ptr or "none"
        return f"{address.ptr or '(removal)'} · waiting for DNS"

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("pool")
            .prefetch_related("assigned_object__vm__owner")
        )

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and obj.status == AddressStatus.ALLOCATED:
            # Held by a VM: it changes through the VM's page (an operation), never by editing the row.
            return (*self.readonly_fields, "pool", "address", "prefix_length", "status")
        return self.readonly_fields

    def has_delete_permission(self, request, obj=None):
        return obj is None or obj.status != AddressStatus.ALLOCATED

    def save_model(self, request, obj, form, change):
        if obj.status == AddressStatus.ALLOCATED and not obj.assigned_object_id:
            obj.status = AddressStatus.RESERVED  # an address with no VM can only be kept back
        super().save_model(request, obj, form, change)

    @admin.display(description="held by")
    def holder(self, address):
        holder = address.assigned_object
        if holder is None:
            return "—"
        url = getattr(holder, "admin_url", None)
        return format_html('<a href="{}">{}</a>', url, holder) if url else str(holder)

    @admin.display(description="owner")
    def owner(self, address):
        holder = address.assigned_object
        owner = getattr(holder, "owner", None)
        return owner.get_username() if owner else "—"
