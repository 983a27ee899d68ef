"""The `firewall` operation's task: vms' bookkeeping (lease, attempts, retries), this app's work."""

from celery import shared_task

from vms.choices import OperationKind, operation_task_name
from vms.tasks import OperationTask, run_operation

from . import applying


@shared_task(bind=True, base=OperationTask, name=operation_task_name(OperationKind.FIREWALL))
def apply_firewall(self, operation_id: int) -> None:
    run_operation(self, operation_id, applying.apply)
