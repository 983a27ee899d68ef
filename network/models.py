"""Address pools and the addresses given out of them (the shape of NetBox's ipam).

A pool is an IPv4 subnet or an IPv6 prefix that some nodes can carry. An address row exists
for every address (or IPv6 network) that is not free: allocated to a NIC, reserved by the
operator, or cooling down after its release. The NIC lives in the VMs app and is reached
through a generic relation, so this app never imports `vms` (nor do its migrations).
"""

import ipaddress

from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from nodes.models import Node

from .carving import capacity_of
from .choices import AddressStatus

# A number a BigIntegerField holds, for pools that are as good as endless (a /64 of single addresses).
MAX_CAPACITY = 2**62


def readable_count(number: int) -> str:
    """A count as people read it: exact up to a billion, then as a power of two (a /64 of addresses)."""
    if number < 10**9:
        return f"{number:,}"
    return f"≈ 2^{number.bit_length() - 1}"


class PoolQuerySet(models.QuerySet):
    def with_usage(self, now=None):
        """Each pool with its counts (`used`, `reserved`, `cooling`, `free`) as aggregates: one query
        for any number of pools, never a count per row."""
        now = now or timezone.now()
        counted = self.annotate(
            used=models.Count("addresses", filter=Q(addresses__status=AddressStatus.ALLOCATED)),
            reserved=models.Count("addresses", filter=Q(addresses__status=AddressStatus.RESERVED)),
            cooling=models.Count(
                "addresses",
                filter=Q(addresses__status=AddressStatus.COOLING, addresses__cooling_until__gt=now),
            ),
        )
        return counted.annotate(free=F("capacity") - F("used") - F("reserved") - F("cooling"))


class Pool(models.Model):
    """An IPv4 subnet or IPv6 prefix, the nodes that can carry it, and what guests need to use it."""

    name = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(
        max_length=49,
        unique=True,
        help_text="The subnet or prefix, e.g. 203.0.113.0/24 or 2001:db8:100::/48.",
    )
    family = models.PositiveSmallIntegerField(choices=[(4, "IPv4"), (6, "IPv6")], editable=False)
    gateway = models.GenericIPAddressField(
        null=True,
        blank=True,
        help_text="The router guests send through on a bridged node (in the subnet, never given out). "
        "Routed nodes give guests a link-local gateway the host answers for instead.",
    )
    first_address = models.GenericIPAddressField(
        null=True, blank=True, help_text="The usable range's start (empty: the subnet's first host)."
    )
    last_address = models.GenericIPAddressField(
        null=True, blank=True, help_text="The usable range's end (empty: the subnet's last host)."
    )
    resolvers = models.CharField(
        max_length=255, blank=True, help_text="DNS resolvers for guests, separated by commas or spaces."
    )
    assign_prefix_length = models.PositiveSmallIntegerField(
        "assigned prefix length",
        default=64,
        help_text="IPv6 only: what each allocation is: a /64 network of its own (64, the default) or "
        "single addresses (128). IPv4 always gives single addresses.",
    )
    nodes = models.ManyToManyField(
        Node,
        related_name="address_pools",
        blank=True,
        help_text="The nodes that can carry this pool's traffic.",
    )
    capacity = models.PositiveBigIntegerField(
        default=0, editable=False, help_text="How many allocations the usable range holds."
    )
    active = models.BooleanField(default=True, help_text="Inactive pools give out nothing new.")

    objects = PoolQuerySet.as_manager()

    class Meta:
        ordering = ["family", "name"]
        verbose_name = "address pool"

    def __str__(self):
        return f"{self.name} ({self.prefix})"

    def save(self, *args, **kwargs):
        network = ipaddress.ip_network(self.prefix, strict=True)
        self.prefix, self.family = str(network), network.version
        self.capacity = min(capacity_of(self), MAX_CAPACITY)
        super().save(*args, **kwargs)

    @property
    def taken_percent(self) -> int:
        """Of a pool counted `with_usage`: how much is used, reserved or cooling down."""
        taken = self.used + self.reserved + self.cooling
        return min(100, round(100 * taken / self.capacity)) if self.capacity else 100

    def readable_capacity(self) -> str:
        return readable_count(self.capacity)

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network(self.prefix, strict=True)

    @property
    def unit_prefix_length(self) -> int:
        """The prefix length of one allocation: 32 for IPv4, 64 or 128 for IPv6."""
        return 32 if self.family == 4 else self.assign_prefix_length

    def resolver_list(self) -> list[str]:
        return [part for part in self.resolvers.replace(",", " ").split() if part]

    def clean(self):
        try:
            network = ipaddress.ip_network(self.prefix, strict=True)
        except ValueError as error:
            raise ValidationError({"prefix": f"Not a subnet: {error}."}) from None
        self.prefix = str(network)
        self.family = network.version
        if network.version == 6 and self.assign_prefix_length not in (64, 128):
            raise ValidationError(
                {"assign_prefix_length": "Give each VM a /64 (64) or single addresses (128)."}
            )
        if network.version == 6 and self.assign_prefix_length < network.prefixlen:
            raise ValidationError(
                {"assign_prefix_length": f"{network} is smaller than a /{self.assign_prefix_length}."}
            )
        for field in ("gateway", "first_address", "last_address"):
            value = getattr(self, field)
            if not value or ipaddress.ip_address(value) in network:
                continue
            if field == "gateway" and ipaddress.ip_address(value).is_link_local and network.version == 6:
                continue  # an IPv6 router is often reached at its link-local address (e.g. fe80::1)
            raise ValidationError({field: f"{value} is not in {network}."})
        for resolver in self.resolver_list():
            try:
                ipaddress.ip_address(resolver)
            except ValueError:
                raise ValidationError({"resolvers": f"{resolver} is not an IP address."}) from None


class AddressQuerySet(models.QuerySet):
    def blocking(self, now=None):
        """Rows whose address may not be given out now: allocated, reserved, or still cooling down."""
        now = now or timezone.now()
        return self.exclude(status=AddressStatus.COOLING, cooling_until__lte=now)

    def assigned_to(self, holder):
        content_type = ContentType.objects.get_for_model(holder)
        return self.filter(assigned_object_type=content_type, assigned_object_id=holder.pk)


class Address(models.Model):
    """An address (IPv4 or IPv6 /128) or an IPv6 network (/64) out of a pool, and what holds it."""

    pool = models.ForeignKey(Pool, on_delete=models.PROTECT, related_name="addresses")
    address = models.GenericIPAddressField(
        unique=True, help_text="The address, or the first address of an IPv6 network."
    )
    prefix_length = models.PositiveSmallIntegerField(help_text="32 or 128 for one address, 64 for a network.")
    status = models.CharField(max_length=16, choices=AddressStatus.choices, default=AddressStatus.ALLOCATED)
    cooling_until = models.DateTimeField(null=True, blank=True)
    assigned_object_type = models.ForeignKey(
        ContentType, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    assigned_object_id = models.PositiveBigIntegerField(null=True, blank=True)
    assigned_object = GenericForeignKey("assigned_object_type", "assigned_object_id")
    description = models.CharField(max_length=200, blank=True)
    assigned_at = models.DateTimeField(null=True, blank=True)
    released_at = models.DateTimeField(null=True, blank=True)
    ptr = models.CharField(
        "reverse DNS name",
        max_length=254,
        blank=True,
        help_text="The PTR record the address should have (with its final dot); empty: none.",
    )
    ptr_published = models.CharField(
        max_length=254, blank=True, editable=False, help_text="The PTR record PowerDNS has now."
    )
    ptr_error = models.CharField(
        max_length=300, blank=True, editable=False, help_text="Why the PTR is not published yet."
    )
    ptr_synced_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = AddressQuerySet.as_manager()

    class Meta:
        ordering = ["pool", "address"]
        verbose_name_plural = "addresses"
        indexes = [models.Index(fields=["assigned_object_type", "assigned_object_id"], name="address_holder")]
        constraints = [
            models.CheckConstraint(
                condition=Q(status="allocated", assigned_object_id__isnull=False)
                | ~Q(status="allocated") & Q(assigned_object_id__isnull=True),
                name="address_held_only_when_allocated",
            )
        ]

    def __str__(self):
        return self.cidr

    def clean(self):
        if not (self.pool_id and self.address):
            return
        if ipaddress.ip_address(self.address) not in self.pool.network:
            raise ValidationError({"address": f"{self.address} is not in {self.pool.prefix}."})
        if self.prefix_length != self.pool.unit_prefix_length:
            raise ValidationError({"prefix_length": f"This pool gives /{self.pool.unit_prefix_length} each."})

    @property
    def family(self) -> int:
        return ipaddress.ip_address(self.address).version

    @property
    def is_network(self) -> bool:
        return self.family == 6 and self.prefix_length < 128

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.prefix_length}"

    @property
    def display(self) -> str:
        """As a customer reads it: a single address bare, a network with its prefix length."""
        return self.cidr if self.is_network else self.address

    @property
    def ptr_pending(self) -> bool:
        """The PTR record PowerDNS has is not yet the one the row asks for ("waiting for DNS")."""
        return self.ptr != self.ptr_published

    @property
    def host_address(self) -> str:
        """The address a guest uses: the address itself, or ::1 of its own IPv6 network."""
        if self.is_network:
            return str(ipaddress.ip_network(self.cidr)[1])
        return self.address
