"""Which addresses (or IPv6 networks) a pool can give out, in order, without listing them all.

IPv4: every host address of the usable range except the network, broadcast and gateway addresses.
IPv6: each VM's own /64 out of the prefix (never the /64 that holds the gateway), or single
addresses except the subnet-router anycast address (the prefix's first) and the gateway.
"""

import ipaddress
from collections.abc import Iterator

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _bounds(pool) -> tuple[int, int]:
    """The first and last usable unit start, as integers."""
    network = pool.network
    unit = pool.unit_prefix_length
    size = 1 << (network.max_prefixlen - unit)
    first, last = int(network.network_address), int(network.broadcast_address) - size + 1
    if unit == network.max_prefixlen and network.num_addresses > 2:
        first += 1  # IPv4 network address; IPv6 subnet-router anycast
        if network.version == 4:
            last -= 1  # broadcast
    if pool.first_address:
        first = max(first, _unit_start(int(ipaddress.ip_address(pool.first_address)), size))
    if pool.last_address:
        last = min(last, _unit_start(int(ipaddress.ip_address(pool.last_address)), size))
    return first, last


def _unit_start(value: int, size: int) -> int:
    return value - value % size


def _excluded(pool) -> set[int]:
    """Unit starts never given out: the one holding the gateway."""
    if not pool.gateway:
        return set()
    size = 1 << (pool.network.max_prefixlen - pool.unit_prefix_length)
    return {_unit_start(int(ipaddress.ip_address(pool.gateway)), size)}


def capacity_of(pool) -> int:
    first, last = _bounds(pool)
    if last < first:
        return 0
    size = 1 << (pool.network.max_prefixlen - pool.unit_prefix_length)
    count = (last - first) // size + 1
    return count - sum(1 for start in _excluded(pool) if first <= start <= last)


def candidates(pool) -> Iterator[IPAddress]:
    """The pool's units in ascending order (each an address, or the first address of a /64)."""
    first, last = _bounds(pool)
    size = 1 << (pool.network.max_prefixlen - pool.unit_prefix_length)
    excluded = _excluded(pool)
    factory = ipaddress.IPv4Address if pool.family == 4 else ipaddress.IPv6Address
    for start in range(first, last + 1, size):
        if start not in excluded:
            yield factory(start)
