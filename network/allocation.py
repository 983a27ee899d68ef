"""Giving addresses out of pools and taking them back: race-safe, unique, with a cool-down.

Every function here must run inside the caller's transaction: allocation locks the pool's row
(SELECT … FOR UPDATE; SQLite's IMMEDIATE transactions serialize writers already), so parallel
requests take turns per pool, and the unique address column is the last word if anything slips.
"""

import ipaddress
from datetime import timedelta

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db.models import Model
from django.utils import timezone

from nodes.choices import NetworkMode
from nodes.models import Node

from . import rdns
from .carving import candidates
from .choices import AddressStatus
from .models import Address, Pool


class AllocationError(Exception):
    """No address can be given; the message is for the person who asked."""


class NoPool(AllocationError):
    pass


class PoolExhausted(AllocationError):
    pass


def pools_for(node: Node, family: int):
    """The active pools of `family` that `node` can carry, in the order they are used.

    A routed node takes IPv6 as /64 networks only: the host routes a whole network to a VM's tap.
    """
    pools = Pool.objects.filter(nodes=node, family=family, active=True)
    if family == 6 and node.network_mode == NetworkMode.ROUTED:
        pools = pools.filter(assign_prefix_length=64)
    return pools.order_by("name")


def allocate(node: Node, holder: Model, family: int, *, pool: Pool | None = None) -> Address:
    """One address (IPv4) or IPv6 network/address for `holder` (a NIC) from a pool `node` carries."""
    pools = [pool] if pool is not None else list(pools_for(node, family))
    if not pools:
        raise NoPool(f"No IPv{family} address pool serves node {node}; staff must add one first.")
    for candidate_pool in pools:
        address = _allocate_from(candidate_pool, holder)
        if address is not None:
            return address
    names = ", ".join(p.name for p in pools)
    raise PoolExhausted(
        f"No IPv{family} address is free on node {node} right now (pool {names} is full). "
        "Nothing was created; please try again later or contact support."
    )


def _allocate_from(pool: Pool, holder: Model) -> Address | None:
    pool = Pool.objects.select_for_update().get(pk=pool.pk)  # one allocator per pool at a time
    now = timezone.now()
    taken = {
        ipaddress.ip_address(value)
        for value in Address.objects.filter(pool=pool).blocking(now).values_list("address", flat=True)
    }
    free = next((candidate for candidate in candidates(pool) if candidate not in taken), None)
    if free is None:
        return None
    fields = {
        "pool": pool,
        "prefix_length": pool.unit_prefix_length,
        "status": AddressStatus.ALLOCATED,
        "cooling_until": None,
        "assigned_object_type": ContentType.objects.get_for_model(holder),
        "assigned_object_id": holder.pk,
        "assigned_at": now,
        "released_at": None,
        "description": "",
        "ptr": "",  # the allocating side gives the default name (network.rdns.give_default)
        "ptr_error": "",
    }
    # An address whose cool-down is over keeps its row (its history); a never-used one gets a new row.
    reused = Address.objects.filter(
        address=str(free), status=AddressStatus.COOLING, cooling_until__lte=now
    ).update(**fields)
    if reused:
        return Address.objects.get(address=str(free))
    return Address.objects.create(address=str(free), **fields)


def release(addresses) -> list[Address]:
    """Take allocated addresses back; each cools down (KVMPANEL_ADDRESS_COOLDOWN_HOURS) before reuse."""
    rows = list(addresses.filter(status=AddressStatus.ALLOCATED))
    now = timezone.now()
    Address.objects.filter(pk__in=[row.pk for row in rows]).update(
        status=AddressStatus.COOLING,
        cooling_until=now + timedelta(hours=settings.KVMPANEL_ADDRESS_COOLDOWN_HOURS),
        assigned_object_type=None,
        assigned_object_id=None,
        released_at=now,
        ptr="",  # the PTR goes with it
    )
    for row in rows:
        if row.ptr_published:
            rdns.request_sync(row)
    return rows


def release_held_by(holder: Model) -> list[Address]:
    return release(Address.objects.assigned_to(holder))
