"""The staff backoffice for plans, VMs and operations (nodes and images have their own apps)."""

import datetime as dt
from functools import cached_property

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.utils import timezone
from django.utils.text import Truncator
from django.views.decorators.http import require_POST

from accounts.admin import AuditedAdmin, ReadOnlyAdmin
from network.models import Address
from nodes.admin import NodeAdmin
from nodes.models import Node

from . import actions, draining, moving, strays
from .choices import OperationKind, OperationStatus
from .models import Operation, Plan, VirtualMachine
from .traffic_admin import TrafficMonthAdmin, lift_throttle, reset_counter

__all__ = ["TrafficMonthAdmin"]  # registered by its module
# When a guest picks up a change of its addresses (the README says the same).
NEXT_BOOT = "the VM's filter follows at once, the guest at its next start (shut it down, then start it)."


@admin.register(Plan)
class PlanAdmin(AuditedAdmin):
    # Addresses and port speed each in one column, so the list fits a 1366 px screen.
    list_display = ("name", "vcpus", "memory_mib", "disk_gb", "addresses", "port", "traffic_gib", "active")
    list_filter = ("active",)
    list_editable = ("active",)

    @admin.display(description="addresses")
    def addresses(self, plan):
        return f"{plan.ipv4_addresses} IPv4 · {plan.ipv6_networks} IPv6"

    @admin.display(description="port (Mbit/s in/out)")
    def port(self, plan):
        if not (plan.inbound_mbps or plan.outbound_mbps):
            return "unlimited"
        return f"{plan.inbound_mbps or '∞'} / {plan.outbound_mbps or '∞'}"


class OperationInline(admin.TabularInline):
    model = Operation
    extra = 0
    can_delete = False
    fields = ("kind", "status", "user", "attempt", "detail", "error", "created_at", "finished_at")
    readonly_fields = fields
    ordering = ("-created_at",)

    @admin.display(description="progress / outcome")
    def detail(self, operation):
        return operation_detail(operation, self._node_names)

    @cached_property
    def _node_names(self) -> dict[int, str]:
        # Inlines are made anew for each request: one query for the page's moves, not one per row.
        return dict(Node.objects.values_list("pk", "name"))

    def has_add_permission(self, request, obj=None):
        return False


def operation_detail(operation: Operation, node_names: dict[int, str] | None = None) -> str:
    """A move's progress while it runs, its downtime once done (the customer's only notice of it).
    `node_names` (pk → name) lets a page of moves read the names once."""
    params = operation.params or {}
    if operation.kind != OperationKind.MIGRATE:
        return f"{params['progress']:.0%}" if operation.is_active and params.get("progress") else ""
    ends = [params.get("from_node_id"), params.get("target_node_id")]
    if node_names is None:
        node_names = dict(Node.objects.filter(pk__in=ends).values_list("pk", "name"))
    route = " → ".join(node_names.get(end, "?") for end in ends)
    if operation.is_active:
        return f"{route}, {params.get('progress', 0):.0%}"
    if params.get("downtime_ms") is not None:
        return f"{route} in {params.get('seconds')} s, downtime {params['downtime_ms']} ms"
    if "seconds" in params:
        return f"{route} in {params['seconds']} s (stopped: no downtime)"
    return route


class MigrateForm(forms.Form):
    target = forms.ModelChoiceField(queryset=Node.objects.all(), label="Move to node")


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
class VirtualMachineAdmin(AuditedAdmin):
    list_display = ("name", "owner", "state", "node", "plan_name", "image", "created_at")
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
        lift_throttle,
        reset_counter,
    ]

    @admin.display(description="plan", ordering="plan__name")
    def plan_name(self, vm):
        return vm.plan.name  # the name alone: the full description made the list too wide

    def get_readonly_fields(self, request, obj=None):
        # Placement and size change through operations (migrate, resize), not by editing rows.
        if obj is not None:
            return (*self.readonly_fields, "owner", "hostname", "node", "plan", "image")
        return self.readonly_fields

    def get_urls(self):
        own = [
            path(
                "<int:vm_id>/addresses/add/",
                self.admin_site.admin_view(self.add_address),
                name="vms_vm_add_address",
            ),
            path(
                "<int:vm_id>/addresses/<int:address_id>/remove/",
                self.admin_site.admin_view(self.remove_address),
                name="vms_vm_remove_address",
            ),
            path("<int:vm_id>/migrate/", self.admin_site.admin_view(self.migrate), name="vms_vm_migrate"),
        ]
        return own + super().get_urls()

    def change_view(self, request, object_id, form_url="", extra_context=None):
        vm = self.get_object(request, object_id)
        extra = {"addresses": list(vm.addresses().select_related("pool")) if vm else []}
        if vm is not None:
            others = Node.objects.exclude(pk=vm.node_id).order_by("name")
            extra["migrate_form"] = MigrateForm()
            extra["migrate_form"].fields["target"].queryset = others
            extra["migrate_targets"] = [(node, _refusal(vm, node)) for node in others[:50]]
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **extra})

    @staticmethod
    def _back(vm):
        return redirect("admin:vms_virtualmachine_change", vm.pk)

    def add_address(self, request, vm_id):
        """Give the VM one more IPv4 address or IPv6 network (POST, family=4|6); an operation applies it."""
        return require_POST(self._add_address)(request, vm_id)

    def _add_address(self, request, vm_id):
        vm = get_object_or_404(VirtualMachine.objects.select_related("node"), pk=vm_id)
        family = 6 if request.POST.get("family") == "6" else 4
        try:
            actions.add_address(vm, request.user, family)
        except actions.ActionRefused as refusal:
            self.message_user(request, str(refusal), messages.ERROR)
        else:
            self.message_user(request, f"{vm}: {vm.addresses().last()} added; {NEXT_BOOT}", messages.SUCCESS)
        return self._back(vm)

    def migrate(self, request, vm_id):
        """Move the VM to the node picked (POST target=<node id>): a migrate operation does it."""
        return require_POST(self._migrate)(request, vm_id)

    def _migrate(self, request, vm_id):
        vm = get_object_or_404(VirtualMachine.objects.select_related("node", "plan", "image"), pk=vm_id)
        if not self.has_change_permission(request, vm):
            raise Http404("no such VM")
        form = MigrateForm(request.POST)
        if not form.is_valid():
            self.message_user(request, "Pick the node to move it to.", messages.ERROR)
            return self._back(vm)
        target = form.cleaned_data["target"]
        try:
            actions.migrate(vm, request.user, target)
        except actions.ActionRefused as refusal:
            self.message_user(request, str(refusal), messages.ERROR)
        else:
            how = "live, with its disk" if vm.state == "running" else "by a copy of its disk (it is stopped)"
            self.message_user(
                request,
                f"{vm}: moving to {target} {how}; its operation shows the progress.",
                messages.SUCCESS,
            )
        return self._back(vm)

    def remove_address(self, request, vm_id, address_id):
        return require_POST(self._remove_address)(request, vm_id, address_id)

    def _remove_address(self, request, vm_id, address_id):
        vm = get_object_or_404(VirtualMachine.objects.select_related("node"), pk=vm_id)
        address = get_object_or_404(Address, pk=address_id, interface__vm=vm)
        try:
            actions.remove_address(vm, request.user, address)
        except actions.ActionRefused as refusal:
            self.message_user(request, str(refusal), messages.ERROR)
        else:
            self.message_user(
                request, f"{vm}: {address} taken back (cooling down); {NEXT_BOOT}", messages.SUCCESS
            )
        return self._back(vm)

    def has_add_permission(self, request):
        return False  # VMs are created through the portal so a task builds them

    def has_delete_permission(self, request, obj=None):
        return False  # deleting removes a disk: it goes through the Delete operation


class OperationActionForm(ActionForm):
    reason = forms.CharField(required=False, max_length=200, label="Reason (for cancelling)")


class NeedsAttentionFilter(admin.SimpleListFilter):
    """What staff look for when something went wrong: stuck, retrying, failed operations."""

    title = "needs attention"
    parameter_name = "attention"

    def lookups(self, request, model_admin):
        return (
            ("stuck", "Stuck (no worker on it)"),
            ("retrying", "Retrying"),
            ("failed", "Failed or cancelled"),
        )

    def queryset(self, request, queryset):
        now = timezone.now()
        after = dt.timedelta(seconds=settings.KVMPANEL_OPERATION_STUCK_SECONDS)
        return {
            "stuck": lambda: queryset.stuck(now, after),
            "retrying": lambda: queryset.retrying(),
            "failed": lambda: queryset.filter(status__in=[OperationStatus.FAILED, OperationStatus.CANCELLED]),
        }.get(self.value(), lambda: queryset)()


@admin.register(Operation)
class OperationAdmin(ReadOnlyAdmin):
    list_display = ("kind", "vm", "status", "attempt", "created_at", "worker", "error_gist")
    list_filter = (NeedsAttentionFilter, "status", "kind")
    search_fields = ("vm__hostname", "vm__uuid", "user__username", "error")
    list_select_related = ("vm", "user")
    date_hierarchy = "created_at"
    action_form = OperationActionForm
    actions = ["retry", "cancel"]

    @admin.display(description="took")
    def took(self, operation):
        return f"{operation.duration.total_seconds():.1f} s" if operation.duration else "—"

    @admin.display(description="worker")
    def worker(self, operation):
        """Who holds it, and whether its lease is still alive."""
        if not operation.lease_owner:
            return "—" if not operation.is_active else f"none (sent {operation.sends} times)"
        alive = operation.lease_expires_at and operation.lease_expires_at > timezone.now()
        return f"{operation.lease_owner.split(':')[0]} ({'alive' if alive else 'lease ran out'})"

    @admin.display(description="error")
    def error_gist(self, operation):
        return Truncator(operation.error).chars(60)

    @admin.action(description="Retry selected operations (send again now, or ask again if they ended)")
    def retry(self, request, queryset):
        for operation in queryset.select_related("vm__node"):
            try:
                again = actions.retry_operation(operation, request.user)
            except actions.ActionRefused as refusal:
                messages.warning(request, f"{operation}: {refusal}")
                continue
            if again.pk == operation.pk:
                messages.success(request, f"{operation}: sent to a worker again.")
            else:
                messages.success(request, f"{operation}: asked again as a new operation.")

    @admin.action(
        description="Cancel selected operations (with the reason above; a create's disk and domain go)"
    )
    def cancel(self, request, queryset):
        reason = request.POST.get("reason", "")
        if not reason.strip():
            messages.error(request, "Give a reason for cancelling: the customer reads it on the VM's page.")
            return
        for operation in queryset.select_related("vm__node"):
            if actions.cancel_operation(operation, request.user, reason):
                messages.success(request, f"{operation}: cancelled.")
            else:
                messages.warning(request, f"{operation}: it had already ended.")


# The node page's strays: paged, with Adopt and Remove (vms/strays.py) after a confirmation page. The node
def _refusal(vm: VirtualMachine, node: Node) -> str:
    """Why `vm` cannot move to `node` now ("" when it can), for the VM page's list of nodes."""
    try:
        moving.check_target(vm, node)
    except moving.MoveRefused as refusal:
        return str(refusal)
    return ""


# admin lives in nodes/, which knows nothing of VMs: the VMs app extends it here.
STRAYS_PER_PAGE = 50


class NodeWithStraysAdmin(NodeAdmin):
    def get_urls(self):
        stray = path(
            "<path:object_id>/strays/<str:action>/",
            self.admin_site.admin_view(self.stray_view),
            name="nodes_node_stray",
        )
        maintenance = path(
            "<path:object_id>/maintenance/<str:action>/",
            self.admin_site.admin_view(self.maintenance_view),
            name="nodes_node_maintenance",
        )
        return [stray, maintenance, *super().get_urls()]

    MAINTENANCE_ACTIONS = {
        "on": "is in maintenance: it gets no new VMs, and its VMs run on.",
        "off": "is out of maintenance: new VMs may go there again.",
        "drain": "is draining: its VMs move to other nodes, a few at a time.",
        "stop-drain": "stopped draining (moves under way finish); it stays in maintenance.",
    }

    def maintenance_view(self, request, object_id, action):
        """Maintenance on/off, drain, stop draining (POST only)."""
        node = self.get_object(request, object_id)
        if (
            node is None
            or action not in self.MAINTENANCE_ACTIONS
            or not self.has_change_permission(request, node)
        ):
            raise Http404("no such node or action")
        if request.method != "POST":
            return redirect("admin:nodes_node_change", node.pk)
        try:
            if action in ("on", "off"):
                draining.set_maintenance(node, request.user, action == "on")
            elif action == "drain":
                draining.start(node, request.user)
            else:
                draining.stop(node, request.user)
        except draining.DrainRefused as refusal:
            self.message_user(request, str(refusal), messages.ERROR)
        else:
            self.message_user(request, f"{node} {self.MAINTENANCE_ACTIONS[action]}", messages.SUCCESS)
        return redirect("admin:nodes_node_change", node.pk)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        node = self.get_object(request, object_id)
        extra = {}
        if node is not None:
            page = Paginator(node.stray_domains, STRAYS_PER_PAGE).get_page(request.GET.get("strays"))
            owners = {stray["name"]: strays.owner_vm(stray["name"]) for stray in page.object_list}
            extra["strays_page"] = page
            extra["stray_rows"] = [(stray, owners[stray["name"]]) for stray in page.object_list]
            extra["vms_left"] = draining.remaining(node).count()
            extra["drain_parallel"] = settings.KVMPANEL_DRAIN_PARALLEL
            extra["moves"] = list(
                Operation.objects.filter(kind=OperationKind.MIGRATE, params__from_node_id=node.pk)
                .select_related("vm")
                .order_by("-created_at")[:10]
            )
            names = dict(Node.objects.values_list("pk", "name"))
            extra["move_rows"] = [(move, operation_detail(move, names)) for move in extra["moves"]]
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})

    def stray_view(self, request, object_id, action):
        """Confirm, then adopt or remove one stray (named by ?name=, a domain name)."""
        node = self.get_object(request, object_id)
        if node is None or action not in ("adopt", "remove") or not self.has_change_permission(request, node):
            raise Http404("no such node or action")
        name = request.POST.get("name") or request.GET.get("name", "")
        back = reverse("admin:nodes_node_change", args=[node.pk])
        try:
            stray = strays.find(node, name)
            if request.method == "POST":
                if action == "adopt":
                    vm = strays.adopt(node, name)
                    self.message_user(request, f"{name} is {vm}'s domain on {node} again.", messages.SUCCESS)
                else:
                    strays.request_removal(node, name)
                    self.message_user(
                        request, f"Removing {name} and its own disks from {node}.", messages.INFO
                    )
                return redirect(back)
        except strays.StrayRefused as refusal:
            self.message_user(request, str(refusal), messages.ERROR)
            return redirect(back)
        context = {
            **self.admin_site.each_context(request),
            "title": f"{action.capitalize()} {name}?",
            "node": node,
            "stray": stray,
            "action": action,
            "owner_vm": strays.owner_vm(name),
            "back": back,
            "opts": self.opts,
        }
        return render(request, "admin/nodes/node/stray_confirm.html", context)


admin.site.unregister(Node)
admin.site.register(Node, NodeWithStraysAdmin)
