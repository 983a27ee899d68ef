"""What the image library does when told about nodes (nodes never import images)."""

import logging

from django.db import transaction
from django.dispatch import receiver
from kombu.exceptions import OperationalError

from nodes.models import Node
from nodes.signals import node_answered

from .sync import lacks_images
from .tasks import sync_node_images

log = logging.getLogger(__name__)


@receiver(node_answered)
def give_missing_images(sender, node: Node, registered: bool, **kwargs) -> None:
    """A node just registered always gets a sync; a refreshed one only when it lacks an image
    (placed while it was away, or while it was being added)."""
    if registered or lacks_images(node):
        request_image_sync(node)


def request_image_sync(node: Node) -> None:
    """Once committed: the node's queue copies over the ready images its pool lacks (sync_node)."""

    def enqueue():
        try:
            sync_node_images.apply_async((node.pk,), queue=node.queue)
        except OperationalError as error:  # the broker is away: the periodic refresh asks again
            log.warning("could not ask for an image sync of %s: %s", node, error)

    transaction.on_commit(enqueue)
