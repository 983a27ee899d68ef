"""Port speed and monthly traffic: counting, the throttle at 100 %, and the month's turn.

The node monitor hands every interval's cumulative NIC counters to `record` (through the usage
recorder). Each VM has a TrafficMonth row per calendar month (UTC) holding what it received and sent,
and the counters it last saw, so a restarted monitor, a restarted VM (its counters start again from
zero) or a month's turn loses nothing and counts nothing twice.

A VM whose plan has an allowance is throttled once in+out reaches it: the row records when, the
customer is mailed, the audit log says so, and `apply_bandwidth` (a task on the node's queue) sets the
low speed on the running domain and its definition. Every definition of the domain carries the
speed `bandwidth_of` gives, so a redefine (resize, reinstall) keeps a throttle. A new month's row is
unthrottled; `turn_month` (Celery beat) lifts last month's throttles on the nodes.
"""

import datetime as dt
import logging
from dataclasses import dataclass

from celery import current_app
from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import F, Q, Sum
from django.template.loader import render_to_string
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

import hypervisor
from accounts import audit
from kvmpanel import units

from .choices import VMState
from .live import publish_vm_changed
from .models import TrafficMonth, VirtualMachine

log = logging.getLogger(__name__)
APPLY_TASK = "vms.tasks.apply_bandwidth"
# Mbit/s to libvirt's kilobytes (1000 bytes) per second.
KBPS_PER_MBPS = 125


def month_of(at: dt.datetime) -> dt.date:
    """The billing month (its first day) that `at` falls in, in UTC."""
    at = at.astimezone(dt.UTC)
    return dt.date(at.year, at.month, 1)


def counter_delta(last: int | None, now: int | None) -> int:
    """What a cumulative counter grew by. A counter that went down was reset (the VM restarted, so
    its NICs are new): all of its value is new. Without an earlier reading, nothing is counted yet."""
    if now is None or last is None:
        return 0
    return now - last if now >= last else now


# --- counting ----------------------------------------------------------------------------------


def record(at: dt.datetime, readings: dict[int, tuple[int | None, int | None]]) -> list[TrafficMonth]:
    """Add one interval's readings ({vm id: (rx bytes, tx bytes)}, cumulative) to each VM's month.

    Returns the rows that just crossed their allowance (already marked throttled and announced).
    """
    if not readings:
        return []
    month = month_of(at)
    with transaction.atomic():
        rows = _month_rows(month, set(readings))
        for vm_id, (rx, tx) in readings.items():
            row = rows[vm_id]
            row.rx_bytes += counter_delta(row.last_rx, rx)
            row.tx_bytes += counter_delta(row.last_tx, tx)
            row.last_rx = rx if rx is not None else row.last_rx
            row.last_tx = tx if tx is not None else row.last_tx
        TrafficMonth.objects.bulk_update(rows.values(), ["rx_bytes", "tx_bytes", "last_rx", "last_tx"])
    over = [row for row in rows.values() if _over_allowance(row)]
    return [row for row in over if throttle(row)]


def _month_rows(month: dt.date, vm_ids: set[int]) -> dict[int, TrafficMonth]:
    """This month's row of each VM, locked; a VM's first row of the month carries on from its last
    counters (of an earlier month), so the traffic of the month's first interval is not lost."""
    existing = set(TrafficMonth.objects.filter(month=month, vm_id__in=vm_ids).values_list("vm_id", flat=True))
    missing = vm_ids - existing
    if missing:
        carried = {}
        for row in TrafficMonth.objects.filter(vm_id__in=missing, month__lt=month).order_by("vm_id", "month"):
            carried[row.vm_id] = row  # the latest earlier month wins
        TrafficMonth.objects.bulk_create(
            [
                TrafficMonth(
                    vm_id=vm_id,
                    month=month,
                    last_rx=getattr(carried.get(vm_id), "last_rx", None),
                    last_tx=getattr(carried.get(vm_id), "last_tx", None),
                )
                for vm_id in missing
            ],
            ignore_conflicts=True,  # the month's turn made some meanwhile
        )
    rows = (
        TrafficMonth.objects.select_for_update()
        .filter(month=month, vm_id__in=vm_ids)
        .select_related("vm__plan")
    )
    return {row.vm_id: row for row in rows}


def _over_allowance(row: TrafficMonth) -> bool:
    allowance = row.vm.plan.traffic_bytes
    return (
        bool(allowance)
        and row.total_bytes >= allowance
        and row.throttled_at is None
        and row.lifted_at is None
    )


def current_month_row(vm: VirtualMachine, now: dt.datetime | None = None) -> TrafficMonth | None:
    return vm.traffic.filter(month=month_of(now or timezone.now())).first()


# --- speeds ------------------------------------------------------------------------------------


def is_throttled(vm: VirtualMachine, now: dt.datetime | None = None) -> bool:
    return vm.traffic.filter(
        month=month_of(now or timezone.now()), throttled_at__isnull=False, lifted_at__isnull=True
    ).exists()


def bandwidth_of(vm: VirtualMachine, throttled: bool | None = None) -> hypervisor.Bandwidth:
    """The speeds the VM's NICs get now: its plan's, or the throttle's (never faster than the plan's)."""
    plan = vm.plan
    inbound, outbound = plan.inbound_mbps * KBPS_PER_MBPS, plan.outbound_mbps * KBPS_PER_MBPS
    if throttled is None:
        throttled = is_throttled(vm)
    if throttled:
        low = settings.KVMPANEL_THROTTLE_KBPS
        inbound = min(inbound, low) if inbound else low
        outbound = min(outbound, low) if outbound else low
    return hypervisor.Bandwidth(inbound_kbps=inbound, outbound_kbps=outbound)


def send_apply(vm: VirtualMachine) -> None:
    """Ask the VM's node to put its NICs at the speeds `bandwidth_of` gives (after commit)."""

    def ring() -> None:
        try:
            current_app.send_task(APPLY_TASK, (vm.pk,), queue=vm.node.queue)
        except (BrokerError, OSError) as error:
            log.warning("could not ask for VM %s's speeds to be applied: %r", vm.pk, error)

    transaction.on_commit(ring)


def apply(node: hypervisor.NodeSession, vm: VirtualMachine) -> int:
    """Put the domain's NICs at the VM's speeds, live and in its definition; 0 when it has no domain
    (its next definition carries them). Throttles and liftings up to now count as applied."""
    started = timezone.now()
    changed = 0
    if node.domain_exists(vm.domain_name):
        changed = node.set_bandwidth(vm.domain_name, bandwidth_of(vm))
    TrafficMonth.objects.filter(vm=vm, speed_changed_at__lte=started).update(speed_applied_at=started)
    return changed


def unapplied(now: dt.datetime, grace: dt.timedelta = dt.timedelta(minutes=1)):
    """Rows whose throttle or lifting the node has not confirmed for a while (a lost message, a node
    that was away): asked for again by the beat. After a day they are left to staff (the log says why)."""
    return TrafficMonth.objects.filter(
        Q(speed_applied_at__isnull=True) | Q(speed_applied_at__lt=F("speed_changed_at")),
        speed_changed_at__lt=now - grace,
        speed_changed_at__gte=now - dt.timedelta(days=1),
    )


# --- the throttle ------------------------------------------------------------------------------


def throttle(row: TrafficMonth) -> bool:
    """Mark the month throttled (once), tell the customer and the audit log, slow the VM down."""
    now = timezone.now()
    with transaction.atomic():
        marked = TrafficMonth.objects.filter(
            pk=row.pk, throttled_at__isnull=True, lifted_at__isnull=True
        ).update(throttled_at=now, speed_changed_at=now)
        if not marked:
            return False
        row.throttled_at = now
        vm = VirtualMachine.objects.select_related("owner", "plan", "node").get(pk=row.vm_id)
        audit.record(
            "vm.traffic_throttle",
            vm,
            outcome="succeeded",
            detail=f"{_gib(row.total_bytes)} of {vm.plan.traffic_gib} GiB used in {row.month:%B %Y}; "
            f"slowed to {settings.KVMPANEL_THROTTLE_KBPS} kB/s",
        )
        send_apply(vm)
        transaction.on_commit(lambda: _mail_throttled(vm, row))
    publish_vm_changed(vm)
    return True


def _mail_throttled(vm: VirtualMachine, row: TrafficMonth) -> None:
    if not vm.owner.email:
        return
    context = {
        "vm": vm,
        "row": row,
        "used": _gib(row.total_bytes),
        "speed_mbps": settings.KVMPANEL_THROTTLE_KBPS / KBPS_PER_MBPS,
        "next_month": _next_month(row.month),
    }
    try:
        send_mail(
            subject=f"{vm.name} has used its monthly traffic and was slowed down",
            message=render_to_string("vms/email/traffic_throttled.txt", context),
            from_email=None,
            recipient_list=[vm.owner.email],
        )
    except OSError as error:  # the mail server is away: the page and the audit log still say it
        log.warning("could not mail %s about VM %s's throttle: %r", vm.owner, vm.pk, error)


def lift(vm: VirtualMachine, by, *, reset: bool = False) -> TrafficMonth:
    """Staff: lift this month's throttle (it is not applied again this month); with `reset`, the
    month's counter starts again from zero instead (and the throttle applies again at 100 %)."""
    now = timezone.now()
    with transaction.atomic():
        row, _ = TrafficMonth.objects.select_for_update().get_or_create(vm=vm, month=month_of(now))
        was = row.is_throttled
        if reset:
            detail = f"counter reset from {_gib(row.total_bytes)}"
            row.rx_bytes = row.tx_bytes = 0
            row.throttled_at = row.lifted_at = None
        else:
            detail = "throttle lifted for the rest of the month"
            row.lifted_at = now
        if was:
            row.speed_changed_at = now
        row.save()
        audit.record(
            "vm.traffic_reset" if reset else "vm.traffic_lift",
            vm,
            outcome="succeeded",
            actor=by,
            detail=detail,
        )
        if was:
            send_apply(vm)
    publish_vm_changed(vm)
    return row


def turn_month(now: dt.datetime | None = None) -> list[int]:
    """A new month lifts every earlier month's throttle: each such VM's speeds go back to its plan's.
    Returns the VM ids lifted. Also asks again for speeds a node has not confirmed. Run by Celery beat
    every few minutes (idempotent)."""
    now = now or timezone.now()
    month = month_of(now)
    for row in unapplied(now).select_related("vm__node"):
        log.info("VM %s: its speeds were not confirmed applied; asking again", row.vm_id)
        send_apply(row.vm)
    ended = TrafficMonth.objects.filter(month__lt=month, throttled_at__isnull=False, lifted_at__isnull=True)
    lifted = []
    for row in ended.select_related("vm__node", "vm__owner"):
        with transaction.atomic():
            lifting = TrafficMonth.objects.filter(pk=row.pk, lifted_at__isnull=True)
            if not lifting.update(lifted_at=now, speed_changed_at=now):
                continue
            vm = row.vm
            if vm.state == VMState.DELETED:
                continue
            audit.record(
                "vm.traffic_unthrottle", vm, outcome="succeeded", detail=f"a new month ({month:%B %Y}) began"
            )
            send_apply(vm)
        publish_vm_changed(vm)
        lifted.append(vm.pk)
    return lifted


# --- what people see ---------------------------------------------------------------------------


@dataclass
class TrafficSummary:
    """A VM's traffic this month against its allowance (0: unlimited), for its page and the API."""

    month: dt.date
    rx_bytes: int
    tx_bytes: int
    allowance_bytes: int
    throttled: bool
    throttled_at: dt.datetime | None
    inbound_mbps: int
    outbound_mbps: int

    @property
    def used_bytes(self) -> int:
        return self.rx_bytes + self.tx_bytes

    @property
    def percent(self) -> float | None:
        if not self.allowance_bytes:
            return None
        return round(100 * self.used_bytes / self.allowance_bytes, 1)

    @property
    def bar_percent(self) -> int:
        return min(100, round(self.percent or 0))

    @property
    def resets_on(self) -> dt.date:
        return _next_month(self.month)

    @property
    def throttle_mbps(self) -> float:
        return settings.KVMPANEL_THROTTLE_KBPS / KBPS_PER_MBPS

    def as_dict(self) -> dict:
        return {
            "month": self.month.strftime("%Y-%m"),
            "received_bytes": self.rx_bytes,
            "sent_bytes": self.tx_bytes,
            "used_bytes": self.used_bytes,
            "allowance_bytes": self.allowance_bytes or None,
            "percent": self.percent,
            "throttled": self.throttled,
            "throttled_at": self.throttled_at,
            "resets_on": self.resets_on,
            "inbound_mbps": self.inbound_mbps or None,
            "outbound_mbps": self.outbound_mbps or None,
        }


def summary(vm: VirtualMachine, now: dt.datetime | None = None) -> TrafficSummary:
    month = month_of(now or timezone.now())
    row = vm.traffic.filter(month=month).first()
    return TrafficSummary(
        month=month,
        rx_bytes=row.rx_bytes if row else 0,
        tx_bytes=row.tx_bytes if row else 0,
        allowance_bytes=vm.plan.traffic_bytes,
        throttled=bool(row and row.is_throttled),
        throttled_at=row.throttled_at if row and row.is_throttled else None,
        inbound_mbps=vm.plan.inbound_mbps,
        outbound_mbps=vm.plan.outbound_mbps,
    )


def top_users(month: dt.date, limit: int = 10, **filters):
    """This month's biggest traffic users (rows with their VM, owner and node), biggest first."""
    rows = TrafficMonth.objects.filter(month=month, **filters).annotate(total=F("rx_bytes") + F("tx_bytes"))
    return (
        rows.filter(total__gt=0)
        .select_related("vm__owner", "vm__node", "vm__plan")
        .order_by("-total")[:limit]
    )


def totals_by_vm() -> dict[int, tuple[int, int]]:
    """Every VM's traffic over all months {vm id: (received, sent)}, for the metrics counters."""
    rows = (
        TrafficMonth.objects.exclude(vm__state=VMState.DELETED)
        .values("vm")
        .annotate(rx=Sum("rx_bytes"), tx=Sum("tx_bytes"))
    )
    return {row["vm"]: (row["rx"], row["tx"]) for row in rows}


def _gib(value: int) -> str:
    return f"{value / 1024**3:.2f} GiB"


def human(value: int) -> str:
    return units.traffic(value)


def _next_month(month: dt.date) -> dt.date:
    return dt.date(month.year + month.month // 12, month.month % 12 + 1, 1)
