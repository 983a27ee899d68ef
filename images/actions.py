"""What staff do to the image catalog, from the backoffice or the API: add an image (by URL, an
uploaded file from the backoffice, or the name of one of the panel's own volumes), delete one.

An image added by URL starts as pending and its download is enqueued after the
commit; one named by its volume waits until a worker has found the volume in the pools; deleting an
image removes its volume from every node's pool afterwards, unless anything still uses that volume.
"""

from django.db import transaction

from accounts import audit

from .formats import size_text
from .models import Image
from .volumes import users_of_volume


class ImageInUse(Exception):
    """The image's volume is still used (by a VM, or another image); the message says by what."""


def add_image(image: Image) -> bool:
    """Save a new image; True when it has a URL and its download was enqueued. An image named by its
    volume is looked for in the pools by a worker (images.tasks.adopt_volume) before it is ready."""
    starts_download = bool(image.source_url)
    image.status = Image.Status.PENDING if starts_download else Image.Status.PLACING
    image.save()
    audit.record("image.add", image, outcome="succeeded", detail=image.source_url or image.volume_name)
    transaction.on_commit(lambda: _fetch(image.pk) if starts_download else _adopt(image.pk))
    return starts_download


def add_uploaded_image(image: Image, upload) -> None:
    """Save a new image from a file an operator uploaded (images.upload, already checked); a task then
    places the file on the nodes and removes it."""
    image.status = Image.Status.PLACING
    image.save()
    image.record_download(upload.fetched)
    size = size_text(upload.size)
    detail = f"uploaded {upload.name} ({size}), sha256 {image.checksum_sha256}"
    audit.record("image.add", image, outcome="succeeded", detail=detail)
    transaction.on_commit(lambda: _hand_over(upload, image))


def _hand_over(upload, image: Image) -> None:
    """Once the row is committed: the task owns the file from now on (it removes it)."""
    from .tasks import place_uploaded_image

    place_uploaded_image.delay(image.pk, upload.fetched.path)
    upload.claimed = True


def delete_image(image: Image) -> None:
    """Delete the row, then its volumes on the nodes. Refused (ImageInUse) while anything uses the
    volume; ProtectedError while any VM row names the image."""
    users = users_of_volume(image.volume_name, image)
    if users:
        shown = ", ".join(users[:3]) + (", …" if len(users) > 3 else "")
        audit.record("image.delete", image, outcome="refused", detail=f"{image.volume_name} used by {shown}")
        raise ImageInUse(f"Its volume {image.volume_name} is still used by {shown}; it stays.")
    volume_name = image.volume_name
    audit.record("image.delete", image, outcome="succeeded", detail=volume_name)
    image.delete()
    transaction.on_commit(lambda: _remove_volumes(volume_name))


def _fetch(image_id: int) -> None:
    from .tasks import fetch_image

    fetch_image.delay(image_id)


def _adopt(image_id: int) -> None:
    from .tasks import adopt_volume

    adopt_volume.delay(image_id)


def _remove_volumes(volume_name: str) -> None:
    from .tasks import remove_image_volumes

    remove_image_volumes.delay(volume_name)
