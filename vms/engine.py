"""The operation engine's parts: the Operation row is the truth, the queue only a doorbell.

- `send` rings the doorbell (the operation's task, on its node's queue) and notes when to ring again.
- `sweep` (Celery beat, every few seconds) rings again for every operation still queued (a lost
  message, a web process that died before it sent, a flushed Redis) or still running on a lease
  that ran out (a dead worker). A lost message costs seconds, never an operation.
- `lease` keeps a claimed operation's lease alive while its work runs (vms/tasks.run_operation).
- `retry_database` lets a worker ride out a database that is away for a while when it records an
  outcome, instead of leaving the operation "running".

See the README's design section for how these fit together, and tests/faults/ for the proof.
"""

import contextlib
import datetime as dt
import logging
import os
import socket
import threading
import time
from pathlib import Path

from celery import current_app
from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from kvmpanel.heartbeat import Heartbeat

from .choices import operation_task_name
from .models import Operation

log = logging.getLogger(__name__)


def lease_length() -> dt.timedelta:
    return dt.timedelta(seconds=settings.KVMPANEL_OPERATION_LEASE_SECONDS)


def worker_identity(task_id: str | None) -> str:
    """Who holds a lease: this host, this process, this delivery of the task."""
    return f"{socket.gethostname()}:{os.getpid()}:{task_id or 'direct'}"


# --- the doorbell --------------------------------------------------------------------------------


def send(operation: Operation) -> bool:
    """Send the operation's task to its node's queue. A broker that is away is logged, not raised:
    the row is already committed, and the sweeper sends it again once the broker is back."""
    try:
        current_app.send_task(
            operation_task_name(operation.kind), (operation.pk,), queue=operation.vm.node.queue
        )
    except (BrokerError, OSError) as error:
        log.warning("could not send operation %s (the sweeper sends it again): %r", operation.pk, error)
        return False
    try:
        operation.record_sent(settings.KVMPANEL_OPERATION_RESEND_SECONDS)
    except DatabaseError as error:  # the task is on its way; only the bookkeeping is late
        log.warning("could not record the sending of operation %s: %r", operation.pk, error)
    return True


def sweep(now: dt.datetime | None = None) -> list[int]:
    """Send again every operation that nothing has taken, or whose worker stopped renewing its lease.

    Returns the ids sent. Run by Celery beat every KVMPANEL_SWEEP_SECONDS.
    """
    now = now or timezone.now()
    resend_after = dt.timedelta(seconds=settings.KVMPANEL_OPERATION_RESEND_SECONDS)
    lost = list(Operation.objects.due_for_sending(now, resend_after).select_related("vm__node")[:500])
    sent = []
    for operation in lost:
        log.info(
            "operation %s (%s) is %s with nothing working on it; sending it again",
            operation.pk,
            operation.kind,
            operation.status,
        )
        if send(operation):
            sent.append(operation.pk)
    return sent


# --- the lease ----------------------------------------------------------------------------------


def lease(operation: Operation) -> Heartbeat:
    """A heartbeat that keeps the operation's lease for as long as the block runs."""
    length = lease_length()

    def renew() -> bool:
        if _owns_connection():
            connection.close_if_unusable_or_obsolete()  # one the server dropped is opened afresh
        return operation.renew_lease(length)

    def close() -> None:
        if _owns_connection():
            connection.close()  # the heartbeat thread's own connection

    return Heartbeat(
        renew, every=max(1.0, length.total_seconds() / 4), name=f"lease-{operation.pk}", on_exit=close
    )


def _owns_connection() -> bool:
    """Whether this thread opened the connection it sees. Under the test runner a thread may share
    the test's connection, which must be left alone."""
    return getattr(connection, "_thread_ident", None) == threading.get_ident()


# --- riding out a database outage ----------------------------------------------------------------


def retry_database(what: str, function, *args, **kwargs):
    """`function(*args, **kwargs)`, run again while the database refuses, for a while.

    Each try starts with fresh connections (a connection the server dropped is closed first). After
    KVMPANEL_DATABASE_OUTAGE_SECONDS the last error is raised: the operation's lease then runs out
    and the sweeper sends it again once the database is back (its work is idempotent).
    """
    deadline = time.monotonic() + settings.KVMPANEL_DATABASE_OUTAGE_SECONDS
    pause = 0.5
    while True:
        try:
            return function(*args, **kwargs)
        except DatabaseError as error:
            if time.monotonic() + pause > deadline:
                raise
            log.warning("%s: the database refused (%r); trying again in %.1f s", what, error, pause)
            time.sleep(pause)
            pause = min(pause * 2, 5.0)
            with contextlib.suppress(DatabaseError):
                connection.close()


# --- fault injection (tests only) ----------------------------------------------------------------


def checkpoint(name: str) -> None:
    """A named step of an operation, where the fault-injection tests (tests/faults/) stop a process.

    They point KVMPANEL_PAUSE_FILE at a file naming one step (`create.disk_made`), or a step and a
    number of seconds (`create.worked 8`). The process that reaches that step first takes the file
    (so a restarted process goes on), says so in `<file>.reached` (its pid), and waits there: for
    ever, to be killed, or for the seconds given. Unset (always, outside those tests), nothing.
    """
    path = os.environ.get("KVMPANEL_PAUSE_FILE")
    if not path:
        return
    try:
        wanted = Path(path).read_text().split()
    except FileNotFoundError:
        return
    if not wanted or wanted[0] != name:
        return
    with contextlib.suppress(FileNotFoundError):
        os.rename(path, f"{path}.taken-{os.getpid()}")  # only one process takes it
        Path(f"{path}.reached").write_text(str(os.getpid()))
        log.warning("fault injection: stopped at %s (pid %s)", name, os.getpid())
        seconds = float(wanted[1]) if len(wanted) > 1 else None
        deadline = time.monotonic() + seconds if seconds is not None else None
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2)
