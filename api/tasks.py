"""Work the API hands to a worker, so no request waits on a hypervisor."""

import logging

from celery import shared_task

import hypervisor
from nodes.models import Node
from nodes.registration import NetworkCheckFailed, register_node

log = logging.getLogger(__name__)


@shared_task(name="api.tasks.register_node", acks_late=True, reject_on_worker_lost=True)
def register_node_task(node_id: int, pool_path: str | None = None, virt_type: str | None = None) -> None:
    """Prepare a node recorded by the API (pool, network, capacity); it goes online when it answers."""
    node = Node.objects.filter(pk=node_id).first()
    if node is None:
        return
    try:
        register_node(
            node.name,
            node.uri,
            pool_name=node.pool_name,
            pool_path=pool_path,
            network_name=node.network_name,
            virt_type=virt_type,
        )
    except NetworkCheckFailed as problem:
        log.warning("node %s cannot carry its network mode yet: %s", node, problem)  # kept on the row
    except hypervisor.HypervisorError as error:
        log.warning("registering node %s failed: %s", node, error)
        Node.objects.filter(pk=node_id).update(last_error=f"Registering failed: {error}")
