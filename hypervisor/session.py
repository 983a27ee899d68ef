"""One open connection to a node's libvirtd, with typed verbs over it.

    with hypervisor.connect("qemu:///system") as node:
        node.define_domain(spec)
        node.start("…uuid…")

Every libvirtError is turned into one of the errors in errors.py.
"""

import contextlib
import hashlib
import io
import json
import logging
import os
import time
from collections.abc import Callable, Iterator

import libvirt
import libvirt_qemu

from . import nwfilter, remote, xml
from .errors import Busy, Conflict, NotOurs, OperationFailed
from .migration import MigrationVerbs
from .power import POWER_STATES
from .protection import ProtectionVerbs
from .specs import (
    Bandwidth,
    DomainCounters,
    DomainSpec,
    DomainStatus,
    FilterSpec,
    NodeInfo,
    PoolInfo,
    PowerState,
)
from .stats import read_counters
from .translate import translate, translated

log = logging.getLogger(__name__)
STREAM_CHUNK_BYTES = 1024 * 1024  # what a volume copy holds in memory at a time
REWRITE_HEAD_BYTES = 64 * 1024  # what a copy that rewrites a file's header holds before sending
# cloud-init writes this at the end of its last stage, every boot (/run is new at each boot).
CLOUD_INIT_RESULT = "/run/cloud-init/result.json"
AGENT_TIMEOUT_S = 5

# libvirt prints every error to stderr by default; we raise our own instead.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

# The guest agent is missing, not running yet, or not answering.
_NO_AGENT = {
    libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
    libvirt.VIR_ERR_AGENT_UNSYNCED,
    libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
}
_UNDEFINE_FLAGS = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
    | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
)


@contextlib.contextmanager
def connect(uri: str) -> Iterator["NodeSession"]:
    """Open a connection to the node at `uri`; unreachable nodes raise NodeUnreachable."""
    try:
        conn = libvirt.open(remote.connection_uri(uri))
    except libvirt.libvirtError as error:
        raise remote.explain(uri, error.get_error_message() or str(error)) from error
    try:
        yield NodeSession(conn)
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()


class NodeSession(ProtectionVerbs, MigrationVerbs):
    """Verbs on one node. Domain names are panel UUIDs (snapshots and disk copies: protection.py)."""

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
        _refresh(pool)
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
        _refresh(storage)
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
        _refresh(storage)  # libvirt probes the uploaded bytes for their real format
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
    def copy_volume_to(
        self,
        pool: str,
        name: str,
        target: "NodeSession",
        target_pool: str,
        rewrite: Callable[[bytes], bytes] | None = None,
    ) -> str:
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

        head = bytearray()  # with `rewrite`: the file's first bytes, held until there are enough

        def send(data: bytes) -> None:
            digest.update(data)
            while data:
                data = data[upstream.send(data) :]

        def forward(data: bytes) -> None:
            if rewrite is None or head is None:
                send(data)
                return
            head.extend(data)
            if len(head) >= REWRITE_HEAD_BYTES:
                flush_head()

        def flush_head() -> None:
            nonlocal head
            if head is not None:
                data, head = rewrite(bytes(head)), None
                send(data)

        try:
            copy.upload(upstream, 0, size, 0)
            self._download(source, forward, length=size)
            if rewrite is not None:
                flush_head()
            upstream.finish()
        except (libvirt.libvirtError, OperationFailed):
            with contextlib.suppress(libvirt.libvirtError):
                upstream.abort()
            with contextlib.suppress(libvirt.libvirtError):
                copy.delete(0)
            raise
        _refresh(storage)  # libvirt probes the copied bytes for their format, as after an upload
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

    @translated
    def host_interface_type(self, name: str) -> str | None:
        """What the node's host interface `name` is ("bridge", "ethernet"…); None when it has none by
        that name. Read only: the panel never changes the host's interfaces. (A bridge without a port
        yet counts: libvirt calls it inactive until it has carrier, which the VMs' taps give it.)"""
        try:
            interface = self._conn.interfaceLookupByName(name)
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_INTERFACE:
                return None
            raise
        return xml.host_interface_type(interface.XMLDesc(libvirt.VIR_INTERFACE_XML_INACTIVE))

    # --- traffic filters ----------------------------------------------------

    @translated
    def define_filter(self, spec: FilterSpec) -> None:
        """Define (or update) a VM's traffic filter; libvirt applies a change to running NICs at once.

        An update names the filter's UUID: libvirt refuses a second filter of the same name otherwise.
        """
        try:
            known = self._conn.nwfilterLookupByName(spec.name).UUIDString()
        except libvirt.libvirtError as error:
            if error.get_error_code() != libvirt.VIR_ERR_NO_NWFILTER:
                raise
            known = None
        self._conn.nwfilterDefineXML(nwfilter.filter_xml(spec, uuid=known))

    @translated
    def delete_filter(self, name: str) -> bool:
        """Remove a filter no NIC uses any more; False when it was already gone."""
        try:
            self._conn.nwfilterLookupByName(name).undefine()
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_NWFILTER:
                return False
            raise
        return True

    @translated
    def filter_names(self) -> list[str]:
        """Every traffic filter the node knows (also a check that its nwfilter driver answers)."""
        return sorted(self._conn.listNWFilters())

    @translated
    def filter_xml(self, name: str) -> str:
        return self._conn.nwfilterLookupByName(name).XMLDesc(0)

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
    def set_bandwidth(self, name: str, bandwidth: Bandwidth) -> int:
        """Set every NIC's speed limits in the definition and, if the domain runs, at once (no restart).

        0 lifts a limit. Returns the number of NICs changed. libvirt takes the definition and the
        running domain as two calls (some drivers refuse both flags together).
        """
        domain = self._panel_domain(name)
        params = {"inbound.average": bandwidth.inbound_kbps, "outbound.average": bandwidth.outbound_kbps}
        flags = [libvirt.VIR_DOMAIN_AFFECT_CONFIG]
        if domain.isActive():
            flags.append(libvirt.VIR_DOMAIN_AFFECT_LIVE)
        macs = [
            mac for mac in xml.interface_bandwidth(domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)) if mac
        ]
        for flag in flags:
            for mac in macs:
                domain.setInterfaceParameters(mac, params, flag)
        return len(macs)

    @translated
    def interface_bandwidth(self, name: str, live: bool = True) -> dict[str, Bandwidth]:
        """Each NIC's speed limits by MAC, as the running domain (or its definition) has them."""
        domain = self._panel_domain(name)
        flag = (
            libvirt.VIR_DOMAIN_AFFECT_LIVE if live and domain.isActive() else libvirt.VIR_DOMAIN_AFFECT_CONFIG
        )
        found = {}
        for mac in xml.interface_bandwidth(domain.XMLDesc(0)):
            params = domain.interfaceParameters(mac, flag)
            found[mac] = Bandwidth(params.get("inbound.average", 0), params.get("outbound.average", 0))
        return found

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
    def remove_domain(self, name: str) -> list[tuple[str, str]]:
        """Power off and undefine the domain, however it is: running, stopped, transient (undefined
        behind the panel's back while it ran) or already gone. Returns its (pool, volume) disks."""
        try:
            domain = self._panel_domain(name)
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return []
            raise
        volumes = xml.domain_volumes(domain.XMLDesc(0))
        persistent = domain.isPersistent()
        with _gone_is_fine():
            if domain.isActive():
                domain.destroy()  # a transient domain is gone after this
        if persistent:
            with _gone_is_fine():
                self._undefine(domain)
        return volumes

    def first_boot_finished(self, name: str) -> bool:
        """Whether the guest's cloud-init has finished this boot: its result file exists (asked through
        the guest agent). False while the agent is not up yet or the file is not there."""
        domain = self._panel_domain(name)
        if not domain.isActive():
            return False
        try:
            handle = self._agent(domain, "guest-file-open", {"path": CLOUD_INIT_RESULT, "mode": "r"})
        except libvirt.libvirtError:
            return False  # no agent yet, or no file yet: both mean "not yet"
        with contextlib.suppress(libvirt.libvirtError):
            self._agent(domain, "guest-file-close", {"handle": handle})
        return True

    @staticmethod
    def _agent(domain: libvirt.virDomain, command: str, arguments: dict):
        request = json.dumps({"execute": command, "arguments": arguments})
        return json.loads(libvirt_qemu.qemuAgentCommand(domain, request, AGENT_TIMEOUT_S, 0))["return"]

    @translated
    def undefine(self, name: str) -> list[tuple[str, str]]:
        """Power off and undefine the domain. Returns its (pool, volume) disks."""
        domain = self._panel_domain(name)
        volumes = xml.domain_volumes(domain.XMLDesc(0))
        if domain.isActive():
            domain.destroy()
        self._undefine(domain)
        return volumes

    @staticmethod
    def _undefine(domain: libvirt.virDomain) -> None:
        try:
            domain.undefineFlags(_UNDEFINE_FLAGS)
        except libvirt.libvirtError as error:
            # Drivers without snapshot/NVRAM support refuse the flags.
            if error.get_error_code() not in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_INVALID_ARG):
                raise
            domain.undefine()

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


def _refresh(pool: libvirt.virStoragePool, tries: int = 20, pause: float = 0.25) -> None:
    """Refresh a pool. While another job builds a volume in it (a parallel create, a full copy)
    libvirt refuses ("asynchronous jobs running"): wait a moment and ask again, rather than fail a
    whole operation over a refresh. Still busy after `tries`: Busy, and the operation is retried."""
    for waited in range(tries - 1):
        try:
            pool.refresh(0)
        except libvirt.libvirtError as error:
            if not isinstance(translate(error), Busy):
                raise
            time.sleep(pause)
            continue
        if waited:
            log.info("pool %s was busy with another job; refreshed after %d waits", pool.name(), waited)
        return
    pool.refresh(0)


@contextlib.contextmanager
def _gone_is_fine() -> Iterator[None]:
    """The domain went away meanwhile (destroyed or undefined by someone else): what we wanted."""
    try:
        yield
    except libvirt.libvirtError as error:
        if error.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise


def _version(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


# The protection verbs speak libvirt too: the same translation of its errors.
for _verb in (
    "create_snapshot",
    "snapshots",
    "revert_snapshot",
    "delete_snapshot",
    "delete_all_snapshots",
    "checkpoints",
    "delete_checkpoints",
    "export_disk",
    "abort_disk_export",
    "read_volume",
    "download_volume",
    "write_volume",
    "convert_volume",
):
    setattr(NodeSession, _verb, translated(getattr(ProtectionVerbs, _verb)))
for _verb in (
    "migratable_xml",
    "is_running",
    "volume_capacity",
    "define_xml",
    "migrate_live",
    "create_volume",
    "copy_overlay_to",
    "volume_path_of",
):
    setattr(NodeSession, _verb, translated(getattr(MigrationVerbs, _verb)))
