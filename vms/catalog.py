"""What staff do to the image catalog, from the backoffice or the API: add an image (by URL, or an
uploaded file from the backoffice), delete one.

An image added by URL starts as pending and its download is enqueued after the
commit; deleting an image removes its volume from every node's pool afterwards.
"""

from django.db import transaction

from accounts import audit

from . import imagefetch
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


def add_uploaded_image(image: Image, upload) -> None:
    """Save a new image from a file an operator uploaded (vms.uploads, already checked); a task then
    places the file on the nodes and removes it."""
    image.status = Image.Status.PLACING
    image.save()
    image.record_download(upload.fetched)
    size = imagefetch.size_text(upload.size)
    detail = f"uploaded {upload.name} ({size}), sha256 {image.checksum_sha256}"
    audit.record("image.add", image, outcome="succeeded", detail=detail)
    transaction.on_commit(lambda: _hand_over(upload, image))


def _hand_over(upload, image: Image) -> None:
    """Once the row is committed: the task owns the file from now on (it removes it)."""
    from .tasks import place_uploaded_image

    place_uploaded_image.delay(image.pk, upload.fetched.path)
    upload.claimed = True


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
