"""Reverse DNS work for the workers (on the default queue: no node is involved)."""

from celery import shared_task

from . import rdns
from .models import Pool


@shared_task(name=rdns.SYNC_TASK, acks_late=True, ignore_result=True)
def sync_ptr(address_id: int) -> bool:
    """Publish one address's PTR as its row says (a failure is left to the sweep)."""
    return rdns.sync(address_id)


@shared_task(name=rdns.ZONES_TASK, acks_late=True, ignore_result=True)
def ensure_zones(pool_id: int) -> list[str]:
    pool = Pool.objects.filter(pk=pool_id).first()
    if pool is None or not rdns.enabled():
        return []
    try:
        return rdns.ensure_zones(pool)
    except rdns.PowerDNSError:
        return []  # a PTR in the pool makes its zone as well, and the sweep retries those


@shared_task(name="network.tasks.sync_rdns", ignore_result=True)
def sync_rdns() -> dict[str, int]:
    """Periodic: every PTR PowerDNS does not have yet is sent again (network/rdns.py)."""
    return rdns.sweep()
