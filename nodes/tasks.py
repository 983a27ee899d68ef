"""Periodic node work: capacity and reachability of every node."""

import logging

from celery import shared_task
from celery.signals import worker_ready
from django.db import DatabaseError

from . import remote
from .models import Node
from .registration import NetworkCheckFailed, refresh_node, register_node

log = logging.getLogger(__name__)


@worker_ready.connect
def write_pinned_host_keys(**_kwargs) -> None:
    """A worker on a new machine knows every SSH node's pinned key before it connects to one."""
    try:
        log.info("wrote the pinned host keys of %d SSH nodes", remote.write_all_known_hosts())
    except (DatabaseError, OSError) as error:
        log.warning("could not write the pinned host keys: %r", error)


@shared_task(name="nodes.tasks.refresh_nodes")
def refresh_nodes() -> None:
    """Periodic: capacity and reachability of every node."""
    for node in Node.objects.all():
        refresh_node(node)


@shared_task(name="nodes.tasks.refresh_node")
def refresh_one_node(node_id: int) -> None:
    """Refresh one node now (after staff changed its network mode, say), not at the next round."""
    node = Node.objects.filter(pk=node_id).first()
    if node is not None:
        refresh_node(node)


@shared_task(name="nodes.tasks.register_node", acks_late=True, reject_on_worker_lost=True)
def register_one_node(node_id: int) -> None:
    """Prepare a node staff added in the backoffice (pool, network, checks); online when it answers."""
    import hypervisor

    node = Node.objects.filter(pk=node_id).first()
    if node is None:
        return
    try:
        register_node(node.name, node.uri, pool_name=node.pool_name, network_name=node.network_name)
    except NetworkCheckFailed as problem:
        log.warning("node %s is not ready for VMs yet: %s", node, problem)  # kept on the row
    except (hypervisor.HypervisorError, remote.HostKeyProblem) as error:
        log.warning("registering node %s failed: %s", node, error)
        Node.objects.filter(pk=node_id).update(last_error=f"Registering failed: {error}")
