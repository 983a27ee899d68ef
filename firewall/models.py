"""A VM's firewall: its default policy for inbound traffic and the rules that allow traffic in."""

import ipaddress

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

import hypervisor
from vms.models import VirtualMachine

from .choices import PORTED, Policy, Protocol

PORT_VALIDATORS = [MinValueValidator(1), MaxValueValidator(65535)]


def normalize_source(value: str) -> str:
    """A CIDR of either family as the panel keeps it ("" for anywhere): host bits cleared, a bare
    address made a /32 or /128. Raises ValidationError with the reason."""
    value = (value or "").strip()
    if not value:
        return ""
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ValidationError(
            f"{value!r} is not an IPv4 or IPv6 network: write it as an address with its prefix length, "
            "e.g. 198.51.100.0/24 or 2001:db8::/32 (empty for anywhere).",
            code="source",
        ) from None


class Firewall(models.Model):
    """The inbound firewall of one VM (every NIC). With the deny policy only replies to the VM's own
    traffic and what a rule allows get in; the VM's own outbound traffic is never stopped."""

    vm = models.OneToOneField(
        VirtualMachine, on_delete=models.CASCADE, related_name="firewall", verbose_name="VM"
    )
    default_policy = models.CharField(max_length=8, choices=Policy.choices, default=Policy.ALLOW)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"firewall of {self.vm}"

    @property
    def denies_by_default(self) -> bool:
        return self.default_policy == Policy.DENY

    def spec(self) -> hypervisor.FirewallSpec:
        return hypervisor.FirewallSpec(
            default_deny=self.denies_by_default, rules=tuple(rule.spec() for rule in self.rules.all())
        )


class FirewallRule(models.Model):
    """One inbound allow rule: a protocol, a port or range (TCP and UDP only), a source network."""

    firewall = models.ForeignKey(Firewall, on_delete=models.CASCADE, related_name="rules")
    position = models.PositiveSmallIntegerField(default=0, help_text="Rules are applied in this order.")
    protocol = models.CharField(max_length=8, choices=Protocol.choices, default=Protocol.TCP)
    port_start = models.PositiveIntegerField(null=True, blank=True, validators=PORT_VALIDATORS)
    port_end = models.PositiveIntegerField(null=True, blank=True, validators=PORT_VALIDATORS)
    source = models.CharField(
        max_length=43, blank=True, help_text="An IPv4 or IPv6 network (CIDR); empty for anywhere."
    )
    comment = models.CharField(max_length=100, blank=True)

    class Meta:
        ordering = ["position", "pk"]

    def __str__(self):
        return self.describe()

    def clean(self):
        errors = {}
        try:
            self.source = normalize_source(self.source)
        except ValidationError as error:
            errors["source"] = error.messages
        if self.protocol in PORTED:
            if self.port_start is None:
                protocol = self.get_protocol_display()
                errors["port_start"] = [f"A {protocol} rule needs a port or a range (1-65535)."]
            elif self.port_end is None:
                self.port_end = self.port_start
            elif self.port_end < self.port_start:
                errors["port_end"] = [
                    f"The range ends ({self.port_end}) before it starts ({self.port_start})."
                ]
        elif self.port_start is not None or self.port_end is not None:
            errors["port_start"] = [f"{self.get_protocol_display()} has no ports: leave the port empty."]
        if errors:
            raise ValidationError(errors)

    @property
    def ports(self) -> str:
        if self.port_start is None:
            return ""
        if self.port_end in (None, self.port_start):
            return str(self.port_start)
        return f"{self.port_start}-{self.port_end}"

    def describe(self) -> str:
        ports = f" {self.ports}" if self.ports else ""
        return f"{self.get_protocol_display()}{ports} from {self.source or 'anywhere'}"

    def spec(self) -> hypervisor.FirewallRuleSpec:
        return hypervisor.FirewallRuleSpec(
            protocol=self.protocol, source=self.source, port_start=self.port_start, port_end=self.port_end
        )
