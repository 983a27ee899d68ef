"""Customer pages. Every read renders from the database only; changes go through vms.actions."""

import hashlib

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import OuterRef, Subquery
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from accounts import reauth
from images.models import Image
from kvmpanel import csp
from network import rdns
from network.models import Address
from nodes.views import usage_response

from . import actions, networking, quotas, traffic
from .choices import OperationKind, VMState
from .consoles import tokens
from .forms import CreateVMForm, ReinstallForm, RescueForm, ResetPasswordForm, ResizeForm, VMSearchForm
from .models import Operation, VirtualMachine, VMUsage

PAGE_SIZE = 25
POWER_ACTIONS = {
    OperationKind.START,
    OperationKind.SHUTDOWN,
    OperationKind.FORCE_OFF,
    OperationKind.REBOOT,
}


def _get_vm_for_user(user, vm_uuid, include_deleted=False) -> VirtualMachine:
    """The VM if this user may see it; otherwise 404, exactly as if it did not exist."""
    queryset = VirtualMachine.objects.visible_to(user, include_deleted=include_deleted)
    return get_object_or_404(queryset.select_related("node", "plan", "image", "owner"), uuid=vm_uuid)


@login_required
def vm_list(request):
    search = VMSearchForm(request.GET)
    queryset = search.filter(
        VirtualMachine.objects.visible_to(request.user)
        .select_related("node", "plan", "image", "owner", "rescue_image")
        .order_by("-created_at", "-id")
    )
    page = Paginator(queryset, PAGE_SIZE).get_page(request.GET.get("page"))
    last_operations = _last_operations(page.object_list)
    addresses = networking.addresses_by_vm(page.object_list)
    for vm in page.object_list:
        vm.listed_addresses = addresses.get(vm.pk, [])
    rows = [(vm, last_operations.get(vm.pk)) for vm in page.object_list]
    context = {
        "page": page,
        "rows": rows,
        "search": search,
        "page_query": search.query_string(),
        "live_version": _list_version(rows, page),
    }
    # Live updates re-fetch only the table (the same partial as the first render).
    if request.headers.get("HX-Request"):
        return render(request, "vms/_list.html", context)
    return render(request, "vms/list.html", {**context, "quota": quotas.summary(request.user)})


def _list_version(rows, page) -> str:
    shown = (
        [
            (vm.pk, vm.updated_at.isoformat(), vm.state, vm.ready_at, op and (op.pk, op.status))
            for vm, op in rows
        ],
        page.paginator.count,
    )
    return hashlib.sha256(repr(shown).encode()).hexdigest()[:16]


def _last_operations(vms) -> dict:
    """The newest operation of each VM on the page, in one query, however long their histories."""
    newest = Operation.objects.filter(vm=OuterRef("vm")).order_by("-created_at", "-id").values("pk")[:1]
    operations = Operation.objects.filter(vm__in=list(vms), pk=Subquery(newest))
    return {operation.vm_id: operation for operation in operations}


@login_required
def vm_create(request):
    form = CreateVMForm(request.POST or None, owner=request.user)
    if request.method == "POST" and form.is_valid():
        try:
            vm = actions.create_vm(owner=request.user, **form.cleaned_data)
        except actions.ActionRefused as refusal:
            form.add_error(None, str(refusal))
        else:
            messages.success(request, f"Creating {vm.name}. It will be running in a few seconds.")
            return redirect(vm)
    return render(request, "vms/create.html", {"form": form, "quota": quotas.summary(request.user)})


@login_required
def vm_detail(request, vm_uuid):
    vm = _get_vm_for_user(request.user, vm_uuid)
    return render(request, "vms/detail.html", _detail_context(vm))


@login_required
def vm_live(request, vm_uuid):
    """The state and operations block, re-fetched by the page while an operation runs."""
    vm = _get_vm_for_user(request.user, vm_uuid, include_deleted=True)
    if vm.state == VMState.DELETED:
        messages.success(request, f"{vm.name} was deleted.")
        response = HttpResponse(status=204)
        response["HX-Redirect"] = reverse("vms:list")
        return response
    return render(request, "vms/_live.html", _detail_context(vm))


# The VM page shows this many of the latest operations, and the rest (up to the limit) behind "Show all".
SHOWN_OPERATIONS = 5
OPERATIONS_LIMIT = 50


def _detail_context(vm: VirtualMachine) -> dict:
    operations = list(vm.operations.select_related("user")[:OPERATIONS_LIMIT])
    addresses = list(vm.addresses())
    usage_now = traffic.summary(vm)
    return {
        "vm": vm,
        "addresses": addresses,
        "ssh_target": networking.ssh_target(addresses),
        "operations": operations,
        "shown_operations": SHOWN_OPERATIONS,
        "operations_limit": OPERATIONS_LIMIT,
        "active_operation": next((op for op in operations if op.is_active), None),
        "allowed": vm.allowed_actions(),
        "snapshots": list(vm.snapshots.all()),
        "isos": Image.objects.isos() if not vm.iso_id else (),
        "traffic": usage_now,
        "rdns_enabled": rdns.enabled(),
        "live_version": live_version(vm, operations, addresses, usage_now),
    }


def live_version(vm: VirtualMachine, operations, addresses=(), traffic_now=None) -> str:
    """A digest of what the live block shows: the page swaps a refresh in only when it differs."""
    shown = (
        vm.updated_at.isoformat(),
        vm.state,
        vm.ready_at,  # "Booting" becomes "Ready" (written without touching updated_at)
        [(address.pk, address.cidr, address.ptr, address.ptr_pending) for address in addresses],
        [(snapshot.pk, snapshot.name) for snapshot in vm.snapshots.all()],
        vm.iso_id,
        vm.owner.is_suspended,
        traffic_now and (traffic_now.throttled, traffic_now.bar_percent),
        [(op.pk, op.status, op.error, op.finished_at and op.finished_at.isoformat()) for op in operations],
    )
    return hashlib.sha256(repr(shown).encode()).hexdigest()[:16]


@login_required
def vm_usage(request, vm_uuid):
    """Graph data for one VM: CPU, memory, disk and network over the last hour, day or month."""
    vm = _get_vm_for_user(request.user, vm_uuid)
    running = vm.state == VMState.RUNNING
    return usage_response(
        request, VMUsage.objects.filter(vm=vm), memory_mib=vm.plan.memory_mib, running=running
    )


@require_POST
@login_required
def vm_action(request, vm_uuid, kind):
    if kind not in POWER_ACTIONS:
        raise Http404("no such action")
    vm = _get_vm_for_user(request.user, vm_uuid)
    _ask(
        request,
        lambda: actions.request(vm, request.user, kind),
        f"{OperationKind(kind).label} requested for {vm.name}.",
    )
    return redirect(_safe_next(request) or vm.get_absolute_url())


@require_POST
@login_required
def vm_address_ptr(request, vm_uuid, address_id):
    """The customer names one of their addresses (its PTR record); a worker publishes it."""
    vm = _get_vm_for_user(request.user, vm_uuid)
    address = get_object_or_404(Address, pk=address_id, interface__vm=vm)
    try:
        actions.set_reverse_dns(vm, request.user, address, request.POST.get("ptr", ""))
    except ValidationError as error:
        messages.error(request, f"Reverse DNS of {address.host_address} not saved: {error.messages[0]}")
    except actions.ActionRefused as refusal:
        messages.error(request, str(refusal))
    else:
        named = address.ptr.rstrip(".") if address.ptr else "no name"
        messages.success(
            request, f"Reverse DNS of {address.host_address} set to {named}; it is published in seconds."
        )
    return redirect(vm.get_absolute_url() + "#vm-addresses")


def _ask(request, act, done: str) -> None:
    """Request a change; tell the user it is on its way, or why it was refused."""
    try:
        act()
    except actions.ActionRefused as refusal:
        messages.error(request, str(refusal))
    else:
        messages.info(request, done)


def _safe_next(request) -> str | None:
    """The page to return to (e.g. the console), if it is one of ours."""
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        return target
    return None


@login_required
def vm_delete(request, vm_uuid):
    vm = _get_vm_for_user(request.user, vm_uuid)
    if not reauth.is_recent(request):  # after the access check: an outsider still gets 404
        return reauth.ask_again(request)
    error = ""
    if request.method == "POST":
        if request.POST.get("confirm_hostname", "").strip().lower() != vm.hostname:
            error = "Type the VM's hostname exactly to confirm."
        else:
            try:
                actions.request(vm, request.user, OperationKind.DELETE)
            except actions.ActionRefused as refusal:
                error = str(refusal)
            else:
                messages.info(request, f"Deleting {vm.name}: its disk and all its data will be removed.")
                return redirect(vm)
    typed = request.POST.get("confirm_hostname", "")
    return render(request, "vms/delete.html", {"vm": vm, "error": error, "typed": typed})


def _vm_form_page(request, vm_uuid, form_class, template: str, act, offered=lambda: True):
    """A page whose form asks for one change to a VM.

    On a valid POST, `act(vm, cleaned_data)` requests the change and returns what to tell the
    user; a refusal goes back into the form. When `offered()` is false (nothing to pick from), the
    page says so instead of showing the form.
    """
    vm = _get_vm_for_user(request.user, vm_uuid)
    form = form_class(request.POST or None, vm=vm)
    if not offered():
        return render(request, template, {"vm": vm, "form": form, "offered": False})
    if request.method == "POST" and form.is_valid():
        try:
            done = act(vm, form.cleaned_data)
        except actions.ActionRefused as refusal:
            form.add_error(None, str(refusal))
        else:
            messages.info(request, done)
            return redirect(vm)
    return render(request, template, {"vm": vm, "form": form, "offered": True})


@login_required
def vm_reinstall(request, vm_uuid):
    def act(vm, data):
        actions.reinstall(
            vm,
            request.user,
            image=data["image"],
            password=data["password"],
            ssh_keys=data["ssh_keys"],
            user_data=data["user_data"],
        )
        return f"Reinstalling {vm.name} with {data['image']}."

    return _vm_form_page(request, vm_uuid, ReinstallForm, "vms/reinstall.html", act)


@login_required
def vm_rescue(request, vm_uuid):
    def act(vm, data):
        actions.rescue(
            vm, request.user, image=data["image"], password=data["password"], ssh_keys=data["ssh_keys"]
        )
        return f"Starting {data['image']} on {vm.name}; its disk will be the second disk."

    offered = Image.objects.rescue_systems().exists
    return _vm_form_page(request, vm_uuid, RescueForm, "vms/rescue.html", act, offered=offered)


@login_required
def vm_reset_password(request, vm_uuid):
    def act(vm, data):
        actions.reset_password(vm, request.user, data["password"])
        return f"Setting the password of {vm.image.default_user} on {vm.name}."

    return _vm_form_page(request, vm_uuid, ResetPasswordForm, "vms/reset_password.html", act)


@login_required
def vm_resize(request, vm_uuid):
    def act(vm, data):
        actions.resize(vm, request.user, data["plan"])
        return f"Resizing {vm.name} to {data['plan'].name}. Start it when the resize is done."

    return _vm_form_page(request, vm_uuid, ResizeForm, "vms/resize.html", act)


@require_POST
@login_required
def vm_leave_rescue(request, vm_uuid):
    vm = _get_vm_for_user(request.user, vm_uuid)
    _ask(
        request,
        lambda: actions.request(vm, request.user, OperationKind.LEAVE_RESCUE),
        f"{vm.name} goes back to booting from its own disk.",
    )
    return redirect(vm)


@require_POST
@login_required
def vm_iso(request, vm_uuid):
    """Insert an ISO from the library into the VM's CD drive (optionally to boot from), or eject it."""
    vm = _get_vm_for_user(request.user, vm_uuid)
    iso_id = request.POST.get("iso", "")
    iso = get_object_or_404(Image.objects.isos(), pk=iso_id) if iso_id else None
    boot = bool(iso) and request.POST.get("boot") == "on"
    done = f"Inserting {iso} into {vm.name}." if iso else f"Ejecting the ISO of {vm.name}."
    _ask(request, lambda: actions.change_iso(vm, request.user, iso, boot=boot), done)
    return redirect(vm)


@login_required
def vm_console(request, vm_uuid):
    """The graphical console page (noVNC); it asks for a one-time token when it connects."""
    vm = _get_vm_for_user(request.user, vm_uuid)
    csp.allow(request, "connect-src", tokens.bridge_base(request))  # the bridge listens on its own port
    return render(request, "vms/console.html", {"vm": vm, "allowed": vm.allowed_actions()})


@require_POST
@login_required
def vm_console_token(request, vm_uuid):
    """A one-time, 30-second token for this user and this VM's console, after the access check."""
    vm = _get_vm_for_user(request.user, vm_uuid)
    if vm.state != VMState.RUNNING:
        return JsonResponse({"error": f"The VM is {vm.get_state_display().lower()}."}, status=409)
    return JsonResponse({"url": tokens.bridge_url(request, tokens.issue(request.user, vm))})


@login_required
def vm_serial(request, vm_uuid):
    """The serial console page (xterm.js over a Channels websocket)."""
    vm = _get_vm_for_user(request.user, vm_uuid)
    return render(request, "vms/serial.html", {"vm": vm, "allowed": vm.allowed_actions()})


@require_POST
@login_required
def vm_snapshot_take(request, vm_uuid):
    vm = _get_vm_for_user(request.user, vm_uuid)
    description = request.POST.get("description", "").strip()[:200]
    _ask(
        request,
        lambda: actions.take_snapshot(vm, request.user, description),
        f"Taking a snapshot of {vm.name}.",
    )
    return redirect(vm)


@login_required
def vm_snapshot_revert(request, vm_uuid, snapshot_id):
    """Asks first, naming what will be lost: everything the VM wrote since the snapshot."""
    vm = _get_vm_for_user(request.user, vm_uuid)
    snapshot = get_object_or_404(vm.snapshots, pk=snapshot_id)
    if request.method == "POST":
        taken = timezone.localtime(snapshot.created_at)
        done = f"Reverting {vm.name} to its snapshot of {taken:%Y-%m-%d %H:%M}."
        _ask(request, lambda: actions.revert_snapshot(vm, request.user, snapshot), done)
        return redirect(vm)
    return render(request, "vms/snapshot_revert.html", {"vm": vm, "snapshot": snapshot})


@require_POST
@login_required
def vm_snapshot_delete(request, vm_uuid, snapshot_id):
    vm = _get_vm_for_user(request.user, vm_uuid)
    snapshot = get_object_or_404(vm.snapshots, pk=snapshot_id)
    _ask(
        request, lambda: actions.delete_snapshot(vm, request.user, snapshot), f"Deleting snapshot {snapshot}."
    )
    return redirect(vm)
