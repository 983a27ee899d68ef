"""Reverse DNS: each pool's reverse zones and each address's PTR record, kept in PowerDNS.

The address row is the truth: `ptr` is the name it should have (empty: none, e.g. once released) and
`ptr_published` what PowerDNS has. `sync` makes PowerDNS say what the row says; until it has, the
address is pending ("waiting for DNS" on its page) and `ptr_error` says why. A task syncs an address
at once after a change, and a periodic sweep syncs every pending one again, so a PowerDNS that is
away, a lost message or a restarted worker delays a change but never loses it; a record is either
published whole or not at all.
"""

import ipaddress
import logging
import re

from celery import current_app
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from . import signals
from .choices import AddressStatus
from .models import Address, Pool
from .pdns import PowerDNS, PowerDNSError

log = logging.getLogger(__name__)
SYNC_TASK = "network.tasks.sync_ptr"
ZONES_TASK = "network.tasks.ensure_zones"
MAX_ZONES_PER_POOL = 256
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$", re.IGNORECASE)


def enabled() -> bool:
    return settings.KVMPANEL_RDNS_ENABLED


def client() -> PowerDNS:
    return PowerDNS(settings.KVMPANEL_PDNS_URL, settings.KVMPANEL_PDNS_API_KEY)


# --- names ---------------------------------------------------------------------------------


def normalize_fqdn(value: str) -> str:
    """A host name as a PTR target: lower case, with its final dot. Raises ValidationError."""
    name = value.strip().lower().rstrip(".")
    if not name:
        raise ValidationError("Enter a host name, e.g. mail.example.com.")
    if len(name) > 253:
        raise ValidationError("A host name has at most 253 characters.")
    labels = name.split(".")
    if len(labels) < 2:
        raise ValidationError("Enter a fully qualified name with its domain, e.g. mail.example.com.")
    for label in labels:
        if not _LABEL.match(label):
            raise ValidationError(
                f"“{label[:63]}” is not a valid part of a host name: letters, digits and hyphens, "
                "1 to 63 characters, not starting or ending with a hyphen."
            )
    if labels[-1].isdigit():
        raise ValidationError("A host name cannot end in a number.")
    return f"{name}."


def default_ptr(hostname: str, address: str) -> str:
    """The operator's default name (KVMPANEL_RDNS_DEFAULT) for an address, or "" if it is not a valid
    FQDN (a bare hostname with a "{hostname}." template): then the address gets no PTR until the
    customer sets one."""
    dashed = address.replace(".", "-").replace(":", "-")
    template = settings.KVMPANEL_RDNS_DEFAULT
    try:
        return normalize_fqdn(template.format(hostname=hostname, ip_dashed=dashed))
    except (ValidationError, KeyError, IndexError, ValueError):
        return ""


def ptr_name(address: Address) -> str:
    """The reverse name of the address the guest answers on (::1 of an IPv6 network)."""
    return ipaddress.ip_address(address.host_address).reverse_pointer + "."


def zone_prefix_length(pool: Pool) -> int:
    """Reverse zones cut at octet (IPv4) or nibble (IPv6) boundaries: a pool's prefix rounded up to
    the next one (a /22 makes four /24 zones), IPv4 pools longer than /24 living in their /24's zone."""
    network = pool.network
    step = 8 if network.version == 4 else 4
    if network.version == 4 and network.prefixlen > 24:
        return 24
    return -(-network.prefixlen // step) * step


def _reverse_zone(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    """The reverse zone name of a network at an octet or nibble boundary."""
    labels = network.network_address.reverse_pointer.split(".")
    keep = network.prefixlen // (8 if network.version == 4 else 4)
    suffix = 2  # in-addr.arpa / ip6.arpa
    return ".".join(labels[len(labels) - suffix - keep :]) + "."


def pool_zones(pool: Pool) -> list[str]:
    length = zone_prefix_length(pool)
    network = pool.network
    if length <= network.prefixlen:
        return [_reverse_zone(network.supernet(new_prefix=length))]
    if 2 ** (length - network.prefixlen) > MAX_ZONES_PER_POOL:
        raise ValueError(f"{pool.prefix} would need more than {MAX_ZONES_PER_POOL} reverse zones")
    return [_reverse_zone(subnet) for subnet in network.subnets(new_prefix=length)]


def zone_of(address: Address) -> str:
    length = zone_prefix_length(address.pool)
    ip = ipaddress.ip_address(address.host_address)
    return _reverse_zone(ipaddress.ip_network(f"{ip}/{length}", strict=False))


# --- keeping PowerDNS in step --------------------------------------------------------------


def pending():
    """Addresses whose PTR PowerDNS does not have yet (set, changed or to be removed)."""
    return Address.objects.filter(~Q(ptr=F("ptr_published")))


def ensure_zones(pool: Pool) -> list[str]:
    """Make the pool's reverse zones that PowerDNS lacks. Returns those made."""
    dns = client()
    nameservers = settings.KVMPANEL_RDNS_NAMESERVERS
    return [zone for zone in pool_zones(pool) if dns.ensure_zone(zone, nameservers)]


def sync(address_id: int) -> bool:
    """Make PowerDNS hold the address's PTR as its row says. True when it does (or rDNS is off);
    False when PowerDNS refused or is away (recorded in ptr_error; the sweep tries again)."""
    address = Address.objects.select_related("pool").filter(pk=address_id).first()
    if address is None or not enabled():
        return True
    wanted = address.ptr if address.status == AddressStatus.ALLOCATED else ""
    if wanted == address.ptr_published and not address.ptr_error:
        return True
    dns = client()
    try:
        zone = zone_of(address)
        dns.ensure_zone(zone, settings.KVMPANEL_RDNS_NAMESERVERS)
        dns.set_ptr(zone, ptr_name(address), wanted)
    except PowerDNSError as error:
        first = not address.ptr_error
        Address.objects.filter(pk=address.pk).update(ptr_error=str(error)[:300])
        log.warning("PTR of %s not published yet: %s", address.address, error)
        if first:
            signals.ptr_changed.send(Address, address=address)
        return False
    # Published as read: if the customer changed it meanwhile, the row stays pending for the next sync.
    Address.objects.filter(pk=address.pk, ptr=address.ptr, status=address.status).update(
        ptr_published=wanted, ptr_error="", ptr_synced_at=timezone.now()
    )
    signals.ptr_changed.send(Address, address=address)
    return True


def request_sync(address: Address) -> None:
    """Ask a worker to sync the address once the transaction commits (the sweep does it otherwise)."""
    if not enabled():
        return

    def ring() -> None:
        try:
            current_app.send_task(SYNC_TASK, (address.pk,))
        except (BrokerError, OSError) as error:
            log.warning("could not ask for the PTR of %s (the sweep does it): %r", address.address, error)

    transaction.on_commit(ring)


def sweep(limit: int = 500) -> dict[str, int]:
    """Sync every pending address (Celery beat, every KVMPANEL_RDNS_SWEEP_SECONDS)."""
    if not enabled():
        return {"synced": 0, "waiting": 0}
    ids = list(pending().values_list("pk", flat=True)[:limit])
    done = sum(1 for pk in ids if sync(pk))
    return {"synced": done, "waiting": len(ids) - done}


def set_ptr(address: Address, name: str) -> Address:
    """A customer's (or staff's) PTR for the address: validated (ValidationError), recorded, synced."""
    target = normalize_fqdn(name) if name.strip() else ""
    Address.objects.filter(pk=address.pk).update(ptr=target, ptr_error="")
    address.ptr, address.ptr_error = target, ""
    request_sync(address)
    return address


def give_default(addresses, hostname: str) -> None:
    """Newly allocated addresses get the operator's default PTR (inside the allocating transaction)."""
    if not enabled():
        return
    for address in addresses:
        address.ptr = default_ptr(hostname, address.host_address)
        Address.objects.filter(pk=address.pk).update(ptr=address.ptr, ptr_error="")
        if address.ptr or address.ptr_published:
            request_sync(address)


def request_zones(pool: Pool) -> None:
    """Ask a worker to make the pool's reverse zones once the transaction commits."""
    if not enabled():
        return

    def ring() -> None:
        try:
            current_app.send_task(ZONES_TASK, (pool.pk,))
        except (BrokerError, OSError) as error:
            log.warning("could not ask for the reverse zones of %s (the sweep does it): %r", pool, error)

    transaction.on_commit(ring)
