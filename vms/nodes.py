"""Registering nodes and keeping their facts (capacity, reachability) current."""

import hashlib
import logging

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from kombu.exceptions import OperationalError

from . import hypervisor
from .choices import NodeStatus
from .models import Image, ImagePlacement, Node

log = logging.getLogger(__name__)


def bridge_name(network: str) -> str:
    """A Linux bridge name (15 characters at most) that is stable for a network name."""
    return "kvp-" + hashlib.sha256(network.encode()).hexdigest()[:10]


def register_node(
    name: str,
    uri: str,
    *,
    pool_name: str | None = None,
    pool_path: str | None = None,
    network_name: str | None = None,
    virt_type: str | None = None,
) -> Node:
    """Create (or update) the node row and prepare the node: storage pool and isolated network.

    Raises hypervisor.NodeUnreachable when the node does not answer.
    """
    pool_name = pool_name or settings.KVMPANEL_POOL_NAME
    pool_path = pool_path or settings.KVMPANEL_POOL_PATH
    network_name = network_name or settings.KVMPANEL_NETWORK_NAME
    with hypervisor.connect(uri) as session:
        info = session.node_info()
        pool = session.ensure_pool(pool_name, pool_path)
        session.ensure_network(network_name, bridge_name(network_name))
    node, _ = Node.objects.update_or_create(
        uri=uri,
        defaults={
            "name": name,
            "pool_name": pool_name,
            "network_name": network_name,
            "virt_type": hypervisor.detect_virt_type(
                info, virt_type or settings.KVMPANEL_VIRT_TYPE, local=_is_local(uri)
            ),
        },
    )
    _record_facts(node, info, pool)
    request_image_sync(node)  # a new node gets the library's images before VMs are placed on it
    return node


def refresh_node(node: Node) -> Node:
    """Read the node's capacity; mark it unreachable (with the reason) when it does not answer."""
    try:
        with hypervisor.connect(node.uri) as session:
            info = session.node_info()
            pool = session.pool_info(node.pool_name)
    except hypervisor.HypervisorError as error:
        node.status = NodeStatus.UNREACHABLE
        node.last_error = str(error)
        node.save(update_fields=["status", "last_error"])
        return node
    _record_facts(node, info, pool)
    if lacks_images(node):  # images placed while it was away, or while it was being added
        request_image_sync(node)
    return node


def lacks_images(node: Node) -> bool:
    """Whether a ready image is not (yet) recorded in the node's pool: a database question only."""
    ready_here = ImagePlacement.objects.filter(node=node, ready=True).values("image")
    return Image.objects.filter(status=Image.Status.READY).exclude(pk__in=ready_here).exists()


def request_image_sync(node: Node) -> None:
    """Once committed: the node's queue copies over the ready images its pool lacks (library.sync_node)."""
    from .tasks import sync_node_images

    def enqueue():
        try:
            sync_node_images.apply_async((node.pk,), queue=node.queue)
        except OperationalError as error:  # the broker is away: the periodic refresh asks again
            log.warning("could not ask for an image sync of %s: %s", node, error)

    transaction.on_commit(enqueue)


def _record_facts(node: Node, info: hypervisor.NodeInfo, pool: hypervisor.PoolInfo) -> None:
    node.hostname = info.hostname
    node.cpus = info.cpus
    node.memory_mib = info.memory_mib
    node.libvirt_version = info.libvirt_version
    node.storage_capacity_bytes = pool.capacity_bytes
    node.storage_available_bytes = pool.available_bytes
    node.last_seen_at = timezone.now()
    node.last_error = ""
    if node.status == NodeStatus.UNREACHABLE:
        node.status = NodeStatus.ONLINE
    node.save()


def _is_local(uri: str) -> bool:
    """A URI without a host part talks to this machine's libvirtd."""
    return "://" in uri and uri.split("://", 1)[1].startswith("/")
