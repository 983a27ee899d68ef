"""What vms asks of the apps above it (they connect receivers; vms never imports them)."""

from django.dispatch import Signal

# Sent with vm=... whenever the VM's traffic filter is built (vms.networking.filter_spec). A receiver
# answers the VM's firewall as a hypervisor.FirewallSpec, or None; the firewall app is the one.
firewall_wanted = Signal()

# Sent with vm=... before the VM moves (vms.moving.check_target). A receiver answers why it cannot move
# now, for staff, or None; the backups app is one (a backup reading its disk).
move_refused = Signal()
