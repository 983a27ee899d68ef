"""PTR news for the pages above: sent (address=…) when PowerDNS took an address's PTR, or refused it,
so the pages showing it refresh."""

from django.dispatch import Signal

ptr_changed = Signal()
