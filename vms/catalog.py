"""What staff do to the image catalog, from the backoffice or the API: add an image, delete one.

An image added by URL starts as pending and its download is enqueued after the
commit; deleting an image removes its volume from every node's pool afterwards.
"""

from django.db import transaction

from accounts import audit

from .models import Image


def add_image(image: Image) -> bool:
    """Save a new image; True when it has a URL and its download was enqueued."""
    starts_download = bool(image.source_url)
    if starts_download:
        image.status = Image.Status.PENDING
    image.save()
    audit.record("image.add", image, outcome="succeeded", detail=image.source_url)
    if starts_download:
        transaction.on_commit(lambda: _fetch(image.pk))
    return starts_download


def delete_image(image: Image) -> None:
    """Delete the row (ProtectedError while a VM uses it), then its volumes on the nodes."""
    volume_name = image.volume_name
    audit.record("image.delete", image, outcome="succeeded", detail=volume_name)
    image.delete()
    transaction.on_commit(lambda: _remove_volumes(volume_name))


def _fetch(image_id: int) -> None:
    from .tasks import fetch_image

    fetch_image.delay(image_id)


def _remove_volumes(volume_name: str) -> None:
    from .tasks import remove_image_volumes

    remove_image_volumes.delay(volume_name)
