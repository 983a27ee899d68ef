"""One open connection to a node's libvirtd, with typed verbs over it.

    with hypervisor.connect("qemu:///system") as node:
        node.define_domain(spec)
        node.start("…uuid…")

Every libvirtError is turned into one of the errors in errors.py.
"""

import contextlib
import functools
import hashlib
import io
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

import libvirt

from . import xml
from .errors import Conflict, HypervisorError, NodeUnreachable, NotFound, NotOurs, OperationFailed
from .power import POWER_STATES
from .specs import DomainCounters, DomainSpec, DomainStatus, NodeInfo, PoolInfo, PowerState
from .stats import read_counters

log = logging.getLogger(__name__)
SLOW_CALL_S = 1.0
STREAM_CHUNK_BYTES = 1024 * 1024  # what a volume copy holds in memory at a time

P = ParamSpec("P")
R = TypeVar("R")

# libvirt prints every error to stderr by default; we raise our own instead.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

_NOT_FOUND = {
    libvirt.VIR_ERR_NO_DOMAIN,
    libvirt.VIR_ERR_NO_STORAGE_POOL,
    libvirt.VIR_ERR_NO_STORAGE_VOL,
    libvirt.VIR_ERR_NO_NETWORK,
}
_CONFLICT = {libvirt.VIR_ERR_OPERATION_INVALID}
# The guest agent is missing, not running yet, or not answering.
_NO_AGENT = {
    libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
    libvirt.VIR_ERR_AGENT_UNSYNCED,
    libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
}
_UNREACHABLE_CODES = {libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_RPC, libvirt.VIR_ERR_AUTH_FAILED}
_UNREACHABLE_DOMAINS = {libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE}

_UNDEFINE_FLAGS = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
    | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
)


def translate(error: libvirt.libvirtError) -> HypervisorError:
    """The project's exception for a libvirt error."""
    code, domain = error.get_error_code(), error.get_error_domain()
    message = error.get_error_message() or str(error)
    if code in _NOT_FOUND:
        return NotFound(message)
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


@contextlib.contextmanager
def connect(uri: str) -> Iterator["NodeSession"]:
    """Open a connection to the node at `uri`; unreachable nodes raise NodeUnreachable."""
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as error:
        raise NodeUnreachable(f"cannot connect to {uri}: {error.get_error_message()}") from error
    try:
        yield NodeSession(conn)
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()


class NodeSession:
    """Verbs on one node. Domain names are panel UUIDs."""

    def __init__(self, conn: libvirt.virConnect):
        self._conn = conn

    # --- the node -----------------------------------------------------------

    @translated
    def node_info(self) -> NodeInfo:
        model, memory_mib, cpus, *_ = self._conn.getInfo()
        caps = xml.parse(self._conn.getCapabilities())
        domain_types = sorted({d.get("type") for d in caps.iterfind("guest/arch/domain")})
        return NodeInfo(
            hostname=self._conn.getHostname(),
            cpus=cpus,
            memory_mib=memory_mib,
            cpu_model=model,
            libvirt_version=_version(self._conn.getLibVersion()),
            hypervisor_version=_version(self._conn.getVersion()),
            domain_types=tuple(domain_types),
        )

    # --- storage ------------------------------------------------------------

    @translated
    def ensure_pool(self, name: str, path: str) -> PoolInfo:
        """The directory pool `name`, defined, built, started and autostarted."""
        try:
            pool = self._conn.storagePoolLookupByName(name)
        except libvirt.libvirtError as error:
            if error.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
                raise
            pool = self._conn.storagePoolDefineXML(xml.pool_xml(name, path), 0)
            pool.build(0)
        if not pool.isActive():
            pool.create(0)
        if not pool.autostart():
            pool.setAutostart(1)
        return self.pool_info(name)

    @translated
    def pool_info(self, name: str) -> PoolInfo:
        pool = self._conn.storagePoolLookupByName(name)
        pool.refresh(0)
        _state, capacity, _allocation, available = pool.info()
        path = xml.parse(pool.XMLDesc(0)).findtext("target/path") or ""
        return PoolInfo(name=name, path=path, capacity_bytes=capacity, available_bytes=available)

    @translated
    def delete_pool(self, name: str) -> None:
        """Stop and undefine a pool (its directory must be empty)."""
        pool = self._conn.storagePoolLookupByName(name)
        if pool.isActive():
            pool.destroy()
        with contextlib.suppress(libvirt.libvirtError):
            pool.delete(0)
        pool.undefine()

    @translated
    def volume_exists(self, pool: str, name: str) -> bool:
        try:
            self._conn.storagePoolLookupByName(pool).storageVolLookupByName(name)
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                return False
            raise
        return True

    @translated
    def volume_path(self, pool: str, name: str) -> str:
        return self._conn.storagePoolLookupByName(pool).storageVolLookupByName(name).path()

    @translated
    def volume_names(self, pool: str) -> list[str]:
        storage = self._conn.storagePoolLookupByName(pool)
        storage.refresh(0)
        return sorted(storage.listVolumes())

    @translated
    def create_overlay(
        self, pool: str, name: str, backing_pool: str, backing_volume: str, capacity_bytes: int
    ) -> str:
        """A qcow2 volume that reads through to the backing volume (instant, copy-on-write)."""
        backing = self._conn.storagePoolLookupByName(backing_pool).storageVolLookupByName(backing_volume)
        backing_format = xml.parse(backing.XMLDesc(0)).find("target/format").get("type", "raw")
        capacity = max(capacity_bytes, backing.info()[1])
        spec = xml.volume_xml(name, capacity, "qcow2", backing=(backing.path(), backing_format))
        return self._conn.storagePoolLookupByName(pool).createXML(spec, 0).path()

    @translated
    def create_full_copy(
        self, pool: str, name: str, source_pool: str, source_volume: str, capacity_bytes: int
    ) -> str:
        """A qcow2 volume holding its own copy of the source's data, grown to `capacity_bytes`."""
        source = self._conn.storagePoolLookupByName(source_pool).storageVolLookupByName(source_volume)
        spec = xml.volume_xml(name, source.info()[1], "qcow2")
        volume = self._conn.storagePoolLookupByName(pool).createXMLFrom(spec, source, 0)
        self.grow_volume(pool, name, capacity_bytes)
        return volume.path()

    @translated
    def upload_volume(self, pool: str, name: str, source_file: str) -> str:
        """Create volume `name` and stream the file's bytes into it through libvirt.

        The stream goes over the libvirt connection, so this works for remote nodes too.
        """
        with open(source_file, "rb") as source:
            return self._upload(pool, name, os.path.getsize(source_file), source.read)

    @translated
    def upload_bytes(self, pool: str, name: str, data: bytes) -> str:
        """Create (or replace) volume `name` holding `data`, e.g. a cloud-init seed ISO."""
        with contextlib.suppress(libvirt.libvirtError):
            self._conn.storagePoolLookupByName(pool).storageVolLookupByName(name).delete(0)
        return self._upload(pool, name, len(data), io.BytesIO(data).read)

    def _upload(self, pool: str, name: str, size: int, read: Callable[[int], bytes]) -> str:
        storage = self._conn.storagePoolLookupByName(pool)
        volume = storage.createXML(xml.volume_xml(name, size, "raw"), 0)
        stream = self._conn.newStream(0)
        try:
            volume.upload(stream, 0, size, 0)
            stream.sendAll(lambda _stream, nbytes, _opaque: read(nbytes), None)
            stream.finish()
        except libvirt.libvirtError:
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
            volume.delete(0)
            raise
        storage.refresh(0)  # libvirt probes the uploaded bytes for their real format
        return volume.path()

    @translated
    def grow_volume(self, pool: str, name: str, capacity_bytes: int) -> None:
        """Make the volume's virtual size `capacity_bytes`, if it is smaller (never shrink a disk)."""
        volume = self._conn.storagePoolLookupByName(pool).storageVolLookupByName(name)
        if volume.info()[1] < capacity_bytes:
            volume.resize(capacity_bytes, 0)

    @translated
    def volume_bytes(self, pool: str, name: str) -> int:
        """The size of the volume's file (for a qcow2 file, not the guest's disk size)."""
        volume = self._conn.storagePoolLookupByName(pool).storageVolLookupByName(name)
        return volume.infoFlags(libvirt.VIR_STORAGE_VOL_GET_PHYSICAL)[2]

    @translated
    def volume_sha256(self, pool: str, name: str) -> str:
        """The SHA-256 of a volume's bytes as stored (the file, not the guest's view), read over a
        libvirt download stream."""
        digest = hashlib.sha256()
        volume = self._conn.storagePoolLookupByName(pool).storageVolLookupByName(name)
        self._download(volume, digest.update)
        return digest.hexdigest()

    @translated
    def copy_volume_to(self, pool: str, name: str, target: "NodeSession", target_pool: str) -> str:
        """Copy volume `name` into the target node's pool under the same name; returns the SHA-256 of
        the bytes copied.

        A download stream from this node feeds an upload stream to the target, a chunk at a time
        through this process: nodes need nothing but libvirtd, as for every other upload. If the
        copy fails, the target's partial volume is deleted.
        """
        source = self._conn.storagePoolLookupByName(pool).storageVolLookupByName(name)
        # The file's own size: for a qcow2 file libvirt's "capacity" is the guest's disk size.
        size = source.infoFlags(libvirt.VIR_STORAGE_VOL_GET_PHYSICAL)[2]
        storage = target._conn.storagePoolLookupByName(target_pool)
        copy = storage.createXML(xml.volume_xml(name, size, "raw"), 0)
        upstream = target._conn.newStream(0)
        digest = hashlib.sha256()

        def forward(data: bytes) -> None:
            digest.update(data)
            while data:
                data = data[upstream.send(data) :]

        try:
            copy.upload(upstream, 0, size, 0)
            self._download(source, forward, length=size)
            upstream.finish()
        except libvirt.libvirtError:
            with contextlib.suppress(libvirt.libvirtError):
                upstream.abort()
            with contextlib.suppress(libvirt.libvirtError):
                copy.delete(0)
            raise
        storage.refresh(0)  # libvirt probes the copied bytes for their format, as after an upload
        return digest.hexdigest()

    def _download(
        self, volume: libvirt.virStorageVol, sink: Callable[[bytes], None], length: int = 0
    ) -> None:
        """Feed the volume's bytes to `sink` a chunk at a time (a blocking stream: b"" at the end)."""
        stream = self._conn.newStream(0)
        try:
            volume.download(stream, 0, length, 0)
            while data := stream.recv(STREAM_CHUNK_BYTES):
                sink(data)
            stream.finish()
        except libvirt.libvirtError:
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
            raise

    @translated
    def delete_volume(self, pool: str, name: str) -> bool:
        """Delete a volume; False when it was already gone."""
        try:
            volume = self._conn.storagePoolLookupByName(pool).storageVolLookupByName(name)
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                return False
            raise
        volume.delete(0)
        return True

    # --- networks -----------------------------------------------------------

    @translated
    def ensure_network(self, name: str, bridge: str) -> None:
        """An isolated (no NAT, no forward) network, defined, started and autostarted."""
        try:
            network = self._conn.networkLookupByName(name)
        except libvirt.libvirtError as error:
            if error.get_error_code() != libvirt.VIR_ERR_NO_NETWORK:
                raise
            network = self._conn.networkDefineXML(xml.network_xml(name, bridge))
        if not network.isActive():
            network.create()
        if not network.autostart():
            network.setAutostart(1)

    @translated
    def delete_network(self, name: str) -> None:
        network = self._conn.networkLookupByName(name)
        if network.isActive():
            network.destroy()
        network.undefine()

    # --- domains ------------------------------------------------------------

    def _panel_domain(self, name: str) -> libvirt.virDomain:
        """The domain `name`, refusing one the panel did not make."""
        domain = self._conn.lookupByName(name)
        if not xml.is_panel_domain(domain.XMLDesc(0)):
            raise NotOurs(f"domain {name} has no kvmpanel metadata; not touching it")
        return domain

    @translated
    def domain_exists(self, name: str) -> bool:
        try:
            self._panel_domain(name)
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return False
            raise
        return True

    @translated
    def define_domain(self, spec: DomainSpec) -> None:
        """Define (or redefine with the same UUID) the domain for `spec`."""
        with contextlib.suppress(libvirt.libvirtError):
            self._panel_domain(spec.name)  # NotOurs propagates: never overwrite a stranger
        self._conn.defineXML(xml.domain_xml(spec))

    @translated
    def domain_status(self, name: str) -> DomainStatus:
        state, _max_mem, memory_kib, vcpus, cpu_time = self._panel_domain(name).info()
        return DomainStatus(
            name=name,
            state=POWER_STATES.get(state, PowerState.UNKNOWN),
            vcpus=vcpus,
            memory_kib=memory_kib,
            cpu_time_ns=cpu_time,
        )

    def power_state(self, name: str) -> PowerState:
        return self.domain_status(name).state

    @translated
    def domain_xml(self, name: str) -> str:
        return self._panel_domain(name).XMLDesc(0)

    @translated
    def start(self, name: str) -> None:
        """Start the domain; a running domain is left as it is."""
        domain = self._panel_domain(name)
        if not domain.isActive():
            domain.create()

    @translated
    def shutdown(self, name: str, timeout: float, poll: float = 0.5) -> None:
        """Ask the guest to power off (ACPI, or the guest agent) and wait until it has.

        Raises OperationFailed when the guest is still running after `timeout` seconds.
        """
        domain = self._panel_domain(name)
        deadline = time.monotonic() + timeout
        asked = False
        while domain.isActive():
            if time.monotonic() >= deadline:
                raise OperationFailed(
                    f"the guest did not power off within {timeout:g} s after the ACPI "
                    "power button; it may not be listening yet (still booting) — "
                    "try again, or use Force off"
                )
            if not asked:
                with contextlib.suppress(libvirt.libvirtError):  # gone off meanwhile
                    domain.shutdown()
                asked = True
            time.sleep(poll)

    @translated
    def destroy(self, name: str) -> None:
        """Cut the power; a stopped domain is left as it is."""
        domain = self._panel_domain(name)
        if domain.isActive():
            domain.destroy()

    @translated
    def reboot(self, name: str) -> None:
        domain = self._panel_domain(name)
        if not domain.isActive():
            raise Conflict("the VM is not running")
        domain.reboot(0)

    @translated
    def change_iso(self, name: str, pool: str, volume: str | None) -> None:
        """Put `volume` in a running domain's ISO drive now, or empty it (None).

        A stopped domain is left alone: its definition already says what the drive holds.
        """
        domain = self._panel_domain(name)
        if not domain.isActive():
            return
        # Force: the guest may hold the tray locked (mounted); the customer asked for the eject.
        flags = libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_DEVICE_MODIFY_FORCE
        domain.updateDeviceFlags(xml.iso_drive_xml(pool, volume), flags)

    @translated
    def set_user_password(self, name: str, user: str, password_hash: str) -> None:
        """Set a guest user's password through the guest agent from a crypt(3) hash, never clear text."""
        domain = self._panel_domain(name)
        if not domain.isActive():
            raise Conflict("the VM is not running")
        try:
            domain.setUserPassword(user, password_hash, libvirt.VIR_DOMAIN_PASSWORD_ENCRYPTED)
        except libvirt.libvirtError as error:
            if error.get_error_code() in _NO_AGENT:
                raise OperationFailed(
                    "the VM's guest agent did not answer, so the password could not be set: the guest "
                    "must run qemu-guest-agent (the panel's images do once booted); wait until it has "
                    "booted and try again, or reinstall"
                ) from error
            raise

    @translated
    def undefine(self, name: str) -> list[tuple[str, str]]:
        """Power off and undefine the domain. Returns its (pool, volume) disks."""
        domain = self._panel_domain(name)
        volumes = xml.domain_volumes(domain.XMLDesc(0))
        if domain.isActive():
            domain.destroy()
        try:
            domain.undefineFlags(_UNDEFINE_FLAGS)
        except libvirt.libvirtError as error:
            # Drivers without snapshot/NVRAM support refuse the flags.
            if error.get_error_code() not in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_INVALID_ARG):
                raise
            domain.undefine()
        return volumes

    @translated
    def domain_states(self) -> dict[str, PowerState]:
        """Every domain on the node, ours or not, with its power state (one round trip)."""
        records = self._conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE, 0)
        return {
            domain.name(): POWER_STATES.get(record.get("state.state"), PowerState.UNKNOWN)
            for domain, record in records
        }

    @translated
    def is_panel_domain(self, name: str) -> bool:
        """Whether the domain carries the panel's metadata marker (read only, for reports)."""
        return xml.is_panel_domain(self._conn.lookupByName(name).XMLDesc(0))

    @translated
    def domain_counters(self) -> list[DomainCounters]:
        """Usage counters of every domain on the node, in one bulk call."""
        return read_counters(self._conn)

    @translated
    def domain_names(self) -> list[str]:
        """Names of all domains on the node, ours or not."""
        return sorted(d.name() for d in self._conn.listAllDomains(0))

    @translated
    def vnc_port(self, name: str) -> int | None:
        """The VNC port of a running domain (for the console bridge)."""
        graphics = xml.parse(self._panel_domain(name).XMLDesc(0)).find("devices/graphics[@type='vnc']")
        port = int(graphics.get("port", "-1")) if graphics is not None else -1
        return port if port > 0 else None


def _version(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"
