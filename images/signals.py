"""What the image library asks the apps above it, so it never imports them."""

from django.dispatch import Signal

# Before an image's volume leaves the nodes' pools: who still uses a volume of this name? Receivers
# answer a list of what uses it, in words ("the disk of VM web-1"); the removal is refused unless
# every answer is empty. vms/volumes.py answers for VMs (disks, seeds, ISOs, rescue systems).
volume_users = Signal()  # sender=Image, volume_name=...
