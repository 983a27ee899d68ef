"""The image library's work in the workers: downloads, placing uploads, syncing nodes, cleaning up."""

import contextlib
import logging
from collections.abc import Iterator

import redis
from celery import shared_task
from django.conf import settings

import hypervisor
from kvmpanel.heartbeat import Heartbeat
from kvmpanel.redis_options import redis_reconnects
from nodes.choices import SERVING_STATUSES
from nodes.models import Node

from . import cleanup, fetch, placement, sync, upload
from .models import Image
from .volumes import users_of_volume

log = logging.getLogger(__name__)

# A long task holds a Redis lock of this length, renewed by a heartbeat while it runs: a second
# delivery of the same message (Redis hands an unacknowledged message out again after the broker's
# visibility timeout) finds it held, and a task whose worker died frees it within this time.
LOCK_SECONDS = 60


@contextlib.contextmanager
def held(key: str) -> Iterator[bool]:
    """Whether we got the lock `key`; while the block runs, it stays ours."""
    lock = redis.Redis.from_url(settings.REDIS_URL, **redis_reconnects(asynchronous=False)).lock(
        f"kvmpanel:{key}", timeout=LOCK_SECONDS, blocking=False
    )
    if not lock.acquire():
        yield False
        return
    try:
        with Heartbeat(
            lambda: bool(lock.extend(LOCK_SECONDS, replace_ttl=True)), every=LOCK_SECONDS / 4, name=key
        ):
            yield True
    finally:
        with contextlib.suppress(redis.exceptions.RedisError):
            lock.release()


@shared_task(bind=True, name="images.tasks.fetch_image", acks_late=True, reject_on_worker_lost=True)
def fetch_image(self, image_id: int) -> None:
    """Download an image added by URL and place it on every online node."""
    image = Image.objects.filter(
        pk=image_id, status__in=[Image.Status.PENDING, Image.Status.DOWNLOADING]
    ).first()
    if image is None:
        return
    with held(f"image-fetch:{image_id}") as mine:
        if not mine:  # another delivery is downloading it: look again later, in case that one dies
            raise self.retry(countdown=LOCK_SECONDS, max_retries=None)
        fetch.fetch_and_place(image)


@shared_task(bind=True, name="images.tasks.place_uploaded_image", acks_late=True, reject_on_worker_lost=True)
def place_uploaded_image(self, image_id: int, path: str) -> None:
    """Place an image uploaded in the backoffice on every online node, then remove the uploaded file."""
    image = Image.objects.filter(pk=image_id, status=Image.Status.PLACING).first()
    if image is None:
        log.warning("image %s is gone or no longer being placed; dropping its upload", image_id)
        upload.discard_upload(path)
        return
    with held(f"image-place:{image_id}") as mine:
        if not mine:
            raise self.retry(countdown=LOCK_SECONDS, max_retries=None)
        upload.place_upload(image, path)


@shared_task(name="images.tasks.sync_node_images", acks_late=True, reject_on_worker_lost=True)
def sync_node_images(node_id: int) -> dict[str, str]:
    """Copy the ready images a node lacks into its pool (sync.sync_node), one sync per node at a time."""
    node = Node.objects.filter(pk=node_id, status__in=SERVING_STATUSES).first()
    if node is None:
        return {}
    # Two syncs of one node would see each other's copy in progress as unfinished and replace it.
    # One that finds a sync running leaves it be: if that one dies, the periodic node refresh asks again.
    with held(f"image-sync:{node.pk}") as mine:
        if not mine:
            log.info("an image sync of %s is already running", node)
            return {}
        try:
            return sync.sync_node(node)
        except hypervisor.HypervisorError as error:
            log.warning("image sync of %s failed: %s", node, error)
            return {}


@shared_task(name="images.tasks.remove_stale_files")
def remove_stale_files() -> list[str]:
    """Periodic: files a killed process left in the download folder (older than a download may take)."""
    return cleanup.remove_stale_files(older_than_seconds=settings.KVMPANEL_IMAGE_DOWNLOAD_TIMEOUT + 6 * 3600)


@shared_task(name="images.tasks.adopt_volume", acks_late=True, reject_on_worker_lost=True)
def adopt_volume(image_id: int) -> None:
    """An image named by its volume: find the volume in the online nodes' pools (placement.adopt)."""
    image = Image.objects.filter(pk=image_id, status=Image.Status.PLACING, source_url="").first()
    if image is not None:
        placement.adopt(image)


@shared_task(name="images.tasks.remove_image_volumes")
def remove_image_volumes(volume_name: str) -> None:
    """After an image is deleted: its volume leaves every node's pool, unless something uses it now."""
    users = users_of_volume(volume_name)
    if users:  # an image of that name was added again meanwhile, or a VM uses it
        log.warning("not removing volume %s: it is used by %s", volume_name, ", ".join(users))
        return
    placement.remove_from_nodes(volume_name, Node.objects.all())
