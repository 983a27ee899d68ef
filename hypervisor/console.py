"""A VM's serial console as a libvirt stream: works for remote nodes without opening ports."""

import contextlib
import logging

import libvirt

from . import remote
from .errors import Conflict
from .session import NodeSession
from .translate import translate

log = logging.getLogger(__name__)


class ConsoleBusy(Conflict):
    """Another viewer holds the console; open with `force` to take it over."""


class SerialConsole:
    """An open console: blocking recv() for a reader thread, send() from anywhere, close() to end.

    It owns its own connection, so it lives as long as the viewer does.
    """

    def __init__(self, uri: str, domain_name: str, force: bool = False):
        try:
            self._conn = libvirt.open(remote.connection_uri(uri))
        except libvirt.libvirtError as error:
            raise remote.explain(uri, error.get_error_message() or str(error)) from error
        try:
            domain = NodeSession(self._conn)._panel_domain(domain_name)
            self._stream = self._conn.newStream(0)
            flags = libvirt.VIR_DOMAIN_CONSOLE_FORCE if force else libvirt.VIR_DOMAIN_CONSOLE_SAFE
            domain.openConsole(None, self._stream, flags)
        except libvirt.libvirtError as error:
            self._conn.close()
            if "Active console session" in (error.get_error_message() or ""):
                raise ConsoleBusy("the serial console is open in another window") from error
            raise translate(error) from error
        except Exception:
            self._conn.close()
            raise

    def recv(self, size: int = 4096) -> bytes:
        """The next bytes from the guest; b"" when the console has ended (closed, taken over, VM off)."""
        try:
            data = self._stream.recv(size)
        except libvirt.libvirtError as error:
            # Said, so that a console that ends while its VM runs can be traced (it shows to the
            # viewer as "ended", the same as a VM turned off or a take-over).
            log.info("serial console stream ended: %s", error.get_error_message())
            return b""
        return data if isinstance(data, bytes) else b""

    def send(self, data: bytes) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            self._stream.send(data)

    def close(self) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            self._stream.abort()
        with contextlib.suppress(libvirt.libvirtError):
            self._conn.close()
