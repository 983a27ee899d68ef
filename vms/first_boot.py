"""A first boot's password hash, made while the node already works (create, reinstall, rescue).

bcrypt at our cost takes 55-75 ms, a fifth of what libvirt needs to make a disk, define
a domain and start it; and the seed that carries the hash is needed only after the disk
and the definition. So the request hashes in a thread and does not wait for it before
enqueueing the task. When the hash is ready the request writes it on the operation and
rings a doorbell in Redis; the task makes the disk and defines the domain meanwhile, and
waits for the bell only when it builds the seed.

Redis carries only the bell. The hash lives on the operation row, as it always has, and
is dropped when the operation ends (models.SECRET_PARAMS).
"""

import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import redis
from django.conf import settings
from django.db import transaction

import hypervisor
from kvmpanel.redis_options import redis_reconnects

from . import cloudinit
from .choices import ACTIVE_OPERATION_STATUSES
from .models import Operation

log = logging.getLogger(__name__)

# The operation's password_hash while the request is still hashing; never a crypt(3) hash.
PENDING = "pending"
# How long a task waits for the hash. The request delivers it within milliseconds; only a
# web process that died after enqueueing leaves a task waiting this long.
WAIT_SECONDS = 60
# bcrypt releases the GIL, so hashing here runs beside the request's own work.
_hashing = ThreadPoolExecutor(max_workers=4, thread_name_prefix="first-boot-hash")


class PasswordNeverArrived(hypervisor.OperationFailed):
    """The request that asked for the install stopped before it delivered the hash.

    A permanent failure like a node's refusal: the task takes back what it made and the
    operation shows this reason.
    """


class PasswordHash:
    """Request side: the hash of `password` ("" for none), started at once in a thread."""

    def __init__(self, password: str):
        if password:
            cloudinit.check_password(password)  # a bad password fails here, before anything is recorded
        self._future = _hashing.submit(cloudinit.hash_password, password) if password else None

    @property
    def param(self) -> str:
        """What the operation's params hold until `deliver`: PENDING, or "" for no password."""
        return PENDING if self._future else ""

    def deliver(self, operation: Operation) -> None:
        """Wait for the hash, put it on the (still active) operation, and ring its task's bell."""
        if self._future is None:
            return
        params = {**operation.params, "password_hash": self._future.result()}
        # Only while active: an operation that already failed must not get a secret back.
        Operation.objects.filter(pk=operation.pk, status__in=ACTIVE_OPERATION_STATUSES).update(params=params)
        operation.params = params
        transaction.on_commit(functools.partial(_ring, operation.pk))


def settings_of(operation: Operation) -> dict:
    """Task side: the operation's first-boot settings, waiting for a hash the request still makes."""
    deadline = time.monotonic() + WAIT_SECONDS
    while operation.params.get("password_hash") == PENDING:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PasswordNeverArrived(
                "the password for the first boot never reached the task (the web request that asked "
                "for it stopped first); nothing was installed, please try again"
            )
        _wait_for_bell(operation.pk, remaining)
        operation.refresh_from_db(fields=["params"])  # the bell rings only after the hash is committed
    return operation.params


def _wait_for_bell(operation_id: int, seconds: float) -> None:
    """Until the bell rings or `seconds` pass. Without Redis (away, restarted) the row is looked at
    again every second instead: the bell only saves time, the hash is on the row."""
    try:
        _doorbell().blpop([_bell_key(operation_id)], timeout=max(1, int(seconds)))
    except redis.RedisError as error:
        log.warning("first-boot doorbell unavailable (%r); looking at the operation instead", error)
        time.sleep(min(1.0, seconds))


def _ring(operation_id: int) -> None:
    try:
        bell = _doorbell().pipeline()
        bell.lpush(_bell_key(operation_id), 1)  # a list, so a bell rung before the task waits is kept
        bell.expire(_bell_key(operation_id), 2 * WAIT_SECONDS)
        bell.execute()
    except redis.RedisError as error:  # the task finds the hash on the row within a second
        log.warning("could not ring the first-boot doorbell of operation %s: %r", operation_id, error)


def _bell_key(operation_id: int) -> str:
    return f"kvmpanel:first-boot:{operation_id}"


@functools.cache
def _doorbell() -> redis.Redis:
    # Reads must be allowed to wait longer than the longest wait (blpop's timeout), or the client
    # gives up first with a TimeoutError (redis-py's default read timeout is 5 s).
    return redis.Redis.from_url(
        settings.REDIS_URL,
        socket_timeout=WAIT_SECONDS + 10,
        socket_connect_timeout=5,
        **redis_reconnects(asynchronous=False),
    )
