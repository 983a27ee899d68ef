"""What still uses an image volume: other images, and (asked through a signal) VMs.

Asked before a volume is removed, by the staff actions and again by the worker that removes it.
"""

from .models import Image
from .signals import volume_users


def users_of_volume(volume_name: str, image: Image | None = None) -> list[str]:
    """What still uses a volume of this name, in words: other images, and (asked by a signal) VMs."""
    users = [
        f"image {other}"
        for other in Image.objects.filter(volume_name=volume_name).exclude(pk=image and image.pk)
    ]
    for _receiver, answer in volume_users.send(sender=Image, volume_name=volume_name):
        users.extend(answer)
    return users
