"""libvirt's errors turned into the project's own, and slow calls logged."""

import functools
import logging
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import libvirt

from .errors import Busy, Conflict, HypervisorError, NodeUnreachable, NotFound, OperationFailed

log = logging.getLogger("hypervisor.session")
SLOW_CALL_S = 1.0

P = ParamSpec("P")
R = TypeVar("R")

_NOT_FOUND = {
    libvirt.VIR_ERR_NO_DOMAIN,
    libvirt.VIR_ERR_NO_STORAGE_POOL,
    libvirt.VIR_ERR_NO_STORAGE_VOL,
    libvirt.VIR_ERR_NO_NETWORK,
    libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT,
    libvirt.VIR_ERR_NO_NWFILTER,
    libvirt.VIR_ERR_NO_INTERFACE,
}
_CONFLICT = {libvirt.VIR_ERR_OPERATION_INVALID}
# libvirt is busy with the object: a domain's state change lock, a resource in use.
_BUSY_CODES = {libvirt.VIR_ERR_OPERATION_TIMEOUT, libvirt.VIR_ERR_RESOURCE_BUSY}
# ...and the answers (libvirt gives them as "operation invalid" or "internal error") that only mean
# "not now": a pool refreshed or a volume still being written by another job (parallel creates,
# full copies, seed uploads).
_BUSY_MESSAGES = ("asynchronous jobs running", "is still being allocated", "is still in use")
_UNREACHABLE_CODES = {libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_RPC, libvirt.VIR_ERR_AUTH_FAILED}
_UNREACHABLE_DOMAINS = {libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE}


def translate(error: libvirt.libvirtError) -> HypervisorError:
    """The project's exception for a libvirt error."""
    code, domain = error.get_error_code(), error.get_error_domain()
    message = error.get_error_message() or str(error)
    if code in _NOT_FOUND:
        return NotFound(message)
    if code in _BUSY_CODES or any(busy in message for busy in _BUSY_MESSAGES):
        return Busy(message)
    if code in _CONFLICT:
        return Conflict(message)
    if code in _UNREACHABLE_CODES or domain in _UNREACHABLE_DOMAINS:
        return NodeUnreachable(message)
    return OperationFailed(message)


def translated(func: Callable[P, R]) -> Callable[P, R]:
    """Turn libvirt errors into ours, and log calls slow enough to explain a slow operation."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        started = time.monotonic()
        try:
            return func(*args, **kwargs)
        except libvirt.libvirtError as error:
            raise translate(error) from error
        finally:
            elapsed = time.monotonic() - started
            log.log(
                logging.INFO if elapsed > SLOW_CALL_S else logging.DEBUG,
                "libvirt %s took %.3f s",
                func.__name__,
                elapsed,
            )

    return wrapper
