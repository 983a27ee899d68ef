"""The backoffice shows each VM's firewall (read only: changes go through the VM page or the API, as
operations that put them on the node)."""

from django.contrib import admin
from django.db.models import Count

from accounts.admin import ReadOnlyAdmin

from .models import Firewall, FirewallRule


class FirewallRuleInline(admin.TabularInline):
    model = FirewallRule
    extra = 0
    can_delete = False
    fields = ("position", "protocol", "port_start", "port_end", "source", "comment")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Firewall)
class FirewallAdmin(ReadOnlyAdmin):
    list_display = ("vm", "owner", "default_policy", "rule_count", "updated_at")
    list_filter = ("default_policy",)
    search_fields = ("vm__hostname", "vm__uuid", "vm__owner__username")
    list_select_related = ("vm__owner",)
    inlines = [FirewallRuleInline]

    @admin.display(description="owner")
    def owner(self, firewall):
        return firewall.vm.owner

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(rule_total=Count("rules"))  # one query per page

    @admin.display(description="rules", ordering="rule_total")
    def rule_count(self, firewall):
        return firewall.rule_total
