"""Per-customer limits on VMs, vCPUs, memory and disk, checked where VMs are created or resized.

Limits come from the user's own fields, or the operator's defaults
(KVMPANEL_QUOTA_*). Staff have none. The check and the new VM's row happen in
one transaction that holds a lock on the customer's row, and every live VM
counts (those still being created too), so parallel requests cannot add up
past a limit.
"""

from dataclasses import dataclass, fields

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Count, Sum

from .models import Plan, VirtualMachine


class QuotaExceeded(Exception):
    """The message says which limit, and where the customer stands."""


@dataclass(frozen=True)
class Resources:
    vms: int = 0
    vcpus: int = 0
    memory_mib: int = 0
    disk_gb: int = 0

    def __add__(self, other: "Resources") -> "Resources":
        return Resources(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def __sub__(self, other: "Resources") -> "Resources":
        return Resources(**{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)})


# How each limit reads, for messages and the portal.
LABELS = {
    "vms": ("VMs", ""),
    "vcpus": ("vCPUs", ""),
    "memory_mib": ("memory", " MiB"),
    "disk_gb": ("disk", " GiB"),
}


def limits_for(user) -> Resources | None:
    """The user's limits; None for staff (no limits)."""
    if user.is_staff:
        return None
    defaults = settings.KVMPANEL_QUOTA_DEFAULTS
    return Resources(
        **{
            name: own if (own := getattr(user, f"max_{name}")) is not None else defaults[name]
            for name in ("vms", "vcpus", "memory_mib", "disk_gb")
        }
    )


def usage_of(user) -> Resources:
    """What the user's live VMs hold, those still being created included (one query)."""
    totals = (
        VirtualMachine.objects.live()
        .filter(owner=user)
        .aggregate(
            vms=Count("id"),
            vcpus=Sum("plan__vcpus"),
            memory_mib=Sum("plan__memory_mib"),
            disk_gb=Sum("plan__disk_gb"),
        )
    )
    return Resources(**{name: value or 0 for name, value in totals.items()})


def needs(plan: Plan) -> Resources:
    return Resources(vms=1, vcpus=plan.vcpus, memory_mib=plan.memory_mib, disk_gb=plan.disk_gb)


def lock_owner(user) -> None:
    """Hold the customer's row until the transaction ends, so their creates run one at a time.

    (SQLite has no row locks; its IMMEDIATE transactions already run writers one at a time.)
    """
    get_user_model().objects.select_for_update().filter(pk=user.pk).first()


def check_room(user, plan: Plan, replacing: Plan | None = None) -> None:
    """Raise QuotaExceeded if a VM of `plan` would take the user past a limit. Call with the lock held.

    With `replacing`, an existing VM moves from that plan to `plan` (a resize): only the difference counts.
    """
    limits = limits_for(user)
    if limits is None:
        return
    used = usage_of(user)
    extra = needs(plan) - needs(replacing) if replacing else needs(plan)
    after = used + extra
    for name, (label, unit) in LABELS.items():
        limit = getattr(limits, name)
        if getattr(extra, name) > 0 and getattr(after, name) > limit:
            raise QuotaExceeded(
                f"This would take you past your limit of {limit}{unit} {label} "
                f"(you use {getattr(used, name)}{unit}, the {plan.name} plan needs "
                f"{getattr(extra, name)}{unit} more). Delete a VM or ask us for a higher limit."
            )


# How the portal shows each one: title, unit, and the factor from the stored unit.
_SHOWN = {
    "vms": ("VMs", "", 1),
    "vcpus": ("vCPUs", "", 1),
    "memory_mib": ("Memory", " GiB", 1024),
    "disk_gb": ("Disk", " GiB", 1),
}


def summary(user) -> list[dict] | None:
    """Usage against limits for the portal; None for staff."""
    limits = limits_for(user)
    if limits is None:
        return None
    used = usage_of(user)
    rows = []
    for name, (title, unit, per) in _SHOWN.items():
        limit, value = getattr(limits, name), getattr(used, name)
        rows.append(
            {
                "label": title,
                "unit": unit,
                "used": f"{value / per:g}",
                "limit": f"{limit / per:g}",
                "percent": min(100, round(100 * value / limit)) if limit else 100,
            }
        )
    return rows
