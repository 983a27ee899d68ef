from django.db import models


class AddressStatus(models.TextChoices):
    ALLOCATED = "allocated", "Allocated"
    RESERVED = "reserved", "Reserved"  # never given out (the operator's own use)
    COOLING = "cooling", "Cooling down"  # released; reused once `cooling_until` has passed


# The gateways a routed node's host answers for on every VM's tap (Hetzner/OVH style): the guest
# reaches them on-link whatever its addresses are.
ROUTED_GATEWAY_V4 = "169.254.0.1"
ROUTED_GATEWAY_V6 = "fe80::1"
