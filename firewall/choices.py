from django.db import models


class Policy(models.TextChoices):
    """What reaches the VM when no rule says otherwise."""

    ALLOW = "allow", "Allow"
    DENY = "deny", "Deny"


class Protocol(models.TextChoices):
    TCP = "tcp", "TCP"
    UDP = "udp", "UDP"
    ICMP = "icmp", "ICMP"
    ANY = "any", "Any"


PORTED = (Protocol.TCP, Protocol.UDP)  # the protocols whose rules name a port or a range
