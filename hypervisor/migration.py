"""Moving a domain to another node: live (memory and local disk copied while it runs) or stopped.

A live move is driven by the worker's own process (client-managed, not peer-to-peer): libvirt asks
both daemons over the two open connections, so it works between any two nodes the worker reaches,
including a node behind a socket URI, which peer-to-peer migration refuses. The disk is a qcow2
overlay: the target gets an empty overlay on its own copy of the image first, and QEMU copies only
the overlay's blocks (NON_SHARED_INC) over NBD while the guest runs, then its memory, then pauses it
for the last pages (the downtime, which libvirt measures). Under emulation the memory is copied with
the guest paused (EMULATED_FLAGS, below).

The definition the target gets is the source's own migratable XML (so the guest's hardware, its PCI
addresses included, stays the same), with the parts that belong to the node changed for the target's:
the storage pool of its disks, the source of its NICs, and where VNC listens.
"""

import contextlib
import logging
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import libvirt
from lxml import etree

from . import xml
from .errors import Conflict, OperationFailed

log = logging.getLogger(__name__)

LIVE_FLAGS = (
    libvirt.VIR_MIGRATE_LIVE
    | libvirt.VIR_MIGRATE_PERSIST_DEST
    | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    | libvirt.VIR_MIGRATE_NON_SHARED_INC
)
# Under emulation (domain type "qemu": a node without KVM) the guest's memory is copied while it is
# paused; its disk is still copied while it runs, so the pause is the memory copy (about a second for
# a small guest). Seen on Debian 12's QEMU 7.2 (TCG): about one test run in three, a guest moved live
# came up with kernel memory that did not match the source's (its timer tree pointed at itself, and
# it spun there with interrupts off): writes made during the copy were lost. With KVM, whose dirty
# log tracks every write, moves stay live.
EMULATED_FLAGS = LIVE_FLAGS & ~libvirt.VIR_MIGRATE_LIVE
_XML_FLAGS = libvirt.VIR_DOMAIN_XML_MIGRATABLE | libvirt.VIR_DOMAIN_XML_SECURE
# The NIC parts that say how it joins the node's network (the rest: MAC, model, address, stay).
_NIC_NODE_PARTS = ("source", "ip", "route", "target")

# Called with the fraction done (0..1); returning False asks for the migration to be cancelled.
Progress = Callable[[float], bool]


@dataclass(frozen=True)
class MigrationResult:
    """What a live move took: the guest's pause at the end (libvirt's measure), and the whole move."""

    downtime_ms: int | None
    seconds: float
    memory_bytes: int | None = None
    disk_bytes: int | None = None


def retarget_domain_xml(source_xml: str, target_xml: str) -> str:
    """The source's migratable definition with the target node's disk pool, NIC sources and VNC
    listen address, all taken from `target_xml` (the definition the panel would give the VM there)."""
    source, target = xml.parse(source_xml), xml.parse(target_xml)
    pools = [s.get("pool") for s in target.iterfind("devices/disk/source") if s.get("pool")]
    if pools:
        for disk_source in source.iterfind("devices/disk/source"):
            if disk_source.get("pool"):
                disk_source.set("pool", pools[0])
    _disks_by_path_as_volumes(source, target)
    target_nics = {
        (nic.find("mac").get("address") or "").lower(): nic
        for nic in target.iterfind("devices/interface")
        if nic.find("mac") is not None
    }
    for nic in source.iterfind("devices/interface"):
        mac = nic.find("mac")
        wanted = target_nics.get((mac.get("address") or "").lower()) if mac is not None else None
        if wanted is None:
            continue
        nic.set("type", wanted.get("type"))
        for tag in _NIC_NODE_PARTS:
            for part in nic.findall(tag):
                nic.remove(part)
        position = nic.index(mac) + 1
        for tag in ("source", "ip", "route"):
            for part in wanted.findall(tag):
                nic.insert(position, _copy(part))
                position += 1
    target_graphics = target.find("devices/graphics[@type='vnc']")
    for graphics in source.iterfind("devices/graphics[@type='vnc']"):
        if target_graphics is None:
            break
        listen = target_graphics.get("listen")
        if listen:
            graphics.set("listen", listen)
            for element in graphics.findall("listen"):
                element.set("address", listen)
    return etree.tostring(source, encoding="unicode")


def _disks_by_path_as_volumes(source: etree._Element, target: etree._Element) -> None:
    """A domain that came by a live move runs with its disks named by path on its node (the target's
    running definition is given that way: volumes_as_files): each such disk becomes the target's pool
    volume for the same device again, so its next move names the next node's file, not this one's."""
    volumes = {
        disk.find("target").get("dev"): disk.find("source")
        for disk in target.iterfind("devices/disk[@type='volume']")
        if disk.find("target") is not None and disk.find("source") is not None
    }
    for disk in source.iterfind("devices/disk[@type='file']"):
        device, disk_source = disk.find("target"), disk.find("source")
        wanted = volumes.get(device.get("dev")) if device is not None else None
        if wanted is None or disk_source is None:
            continue
        disk.set("type", "volume")
        disk_source.attrib.pop("file", None)
        disk_source.set("pool", wanted.get("pool"))
        disk_source.set("volume", wanted.get("volume"))
        for chain in disk.findall("backingStore"):  # this node's paths; the target reads its own
            disk.remove(chain)


QCOW2_MAGIC = b"QFI\xfb"
QCOW2_HEAD_BYTES = 64 * 1024  # the smallest cluster: the header and the backing file name lie within it


def rebase_qcow2_header(head: bytes, backing_path: str) -> bytes:
    """The first bytes of a qcow2 file with its backing file name changed to `backing_path`.

    The name is stored at `backing_file_offset` (header bytes 8-15), `backing_file_size` bytes long
    (16-19), inside the first cluster; the new name takes its place (the rest of the old one zeroed).
    Refuses (OperationFailed) a file that is not qcow2, has no backing file, or has no room for the name.
    """
    if head[:4] != QCOW2_MAGIC:
        raise OperationFailed("not a qcow2 file")
    offset, size = struct.unpack(">QI", head[8:20])
    cluster_bits = struct.unpack(">I", head[20:24])[0]
    new = backing_path.encode()
    if not offset:
        raise OperationFailed("the qcow2 file has no backing file")
    if offset + max(size, len(new)) > min(1 << cluster_bits, len(head)):
        raise OperationFailed("no room for the new backing file name in the qcow2 header")
    changed = bytearray(head)
    changed[16:20] = struct.pack(">I", len(new))
    changed[offset : offset + max(size, len(new))] = new.ljust(max(size, len(new)), b"\0")
    return bytes(changed)


def volumes_as_files(definition: str, path_of: Callable[[str, str], str]) -> str:
    """`definition` with each pool volume disk (<disk type="volume"><source pool= volume=>) named by
    its file's path instead (<disk type="file"><source file=>); `path_of(pool, volume)` gives it."""
    domain = xml.parse(definition)
    for disk in domain.iterfind("devices/disk[@type='volume']"):
        source = disk.find("source")
        if source is None or not source.get("pool"):
            continue
        path = path_of(source.get("pool"), source.get("volume"))
        disk.set("type", "file")
        for name in list(source.attrib):
            if name in ("pool", "volume", "mode"):
                del source.attrib[name]
        source.set("file", path)
    return etree.tostring(domain, encoding="unicode")


def _copy(element: etree._Element) -> etree._Element:
    return etree.fromstring(etree.tostring(element))


class MigrationVerbs:
    """Mixed into NodeSession (which gives `_conn`, `_panel_domain` and the `translated` wrapper)."""

    _conn: libvirt.virConnect

    def migratable_xml(self, name: str, inactive: bool = False) -> str:
        """The domain's definition as another node can take it (the VNC password included)."""
        flags = _XML_FLAGS | (libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0)
        return self._panel_domain(name).XMLDesc(flags)

    def is_running(self, name: str) -> bool:
        return bool(self._panel_domain(name).isActive())

    def volume_capacity(self, pool: str, name: str) -> int:
        """The guest's size of a volume (for a qcow2 overlay, its virtual size)."""
        return self._conn.storagePoolLookupByName(pool).storageVolLookupByName(name).info()[1]

    def volume_path_of(self, pool: str, name: str) -> str:
        return self._conn.storagePoolLookupByName(pool).storageVolLookupByName(name).path()

    def create_volume(self, pool: str, name: str, capacity_bytes: int) -> str:
        """An empty qcow2 volume of the guest's size `capacity_bytes` (a live move fills it)."""
        return (
            self._conn.storagePoolLookupByName(pool)
            .createXML(xml.volume_xml(name, capacity_bytes, "qcow2"), 0)
            .path()
        )

    def copy_overlay_to(
        self, pool: str, name: str, target: "MigrationVerbs", target_pool: str, backing_volume: str
    ) -> str:
        """Copy a qcow2 overlay's file to the target's pool, pointing it at the target's copy of its
        backing volume (the file names its backing image by path, which may differ there)."""
        backing = target._conn.storagePoolLookupByName(target_pool).storageVolLookupByName(backing_volume)
        return self.copy_volume_to(
            pool, name, target, target_pool, rewrite=lambda head: rebase_qcow2_header(head, backing.path())
        )

    def define_xml(self, definition: str) -> None:
        """Define a domain from a full definition (a moved VM's, retargeted); only the panel's."""
        if not xml.is_panel_domain(definition):
            raise Conflict("refusing to define a domain without the panel's metadata")
        self._conn.defineXML(definition)

    def migrate_live(
        self,
        name: str,
        target: "MigrationVerbs",
        *,
        target_xml: str,
        migrate_uri: str = "",
        disks_uri: str = "",
        progress: Progress | None = None,
        poll: float = 0.5,
    ) -> MigrationResult:
        """Move running domain `name` to `target` with its local disks, while it runs.

        `target_xml` is the definition the panel would give it on the target (retarget_domain_xml
        takes the node's parts from it). The overlay must already exist in the target's pool. On
        failure libvirt leaves the domain running here, and the error is raised.
        """
        domain = self._panel_domain(name)
        if not domain.isActive():
            raise Conflict("the VM is not running: a stopped VM moves by copying its disk")
        running_xml = domain.XMLDesc(_XML_FLAGS)
        live_xml = retarget_domain_xml(running_xml, target_xml)
        flags = EMULATED_FLAGS if xml.parse(running_xml).get("type") == "qemu" else LIVE_FLAGS
        params = {
            # The running definition names its disks by path on the target: libvirt's incremental copy
            # checks that the target's disks exist, by path, before it resolves any pool.
            libvirt.VIR_MIGRATE_PARAM_DEST_XML: volumes_as_files(live_xml, target.volume_path_of),
            libvirt.VIR_MIGRATE_PARAM_PERSIST_XML: retarget_domain_xml(
                domain.XMLDesc(_XML_FLAGS | libvirt.VIR_DOMAIN_XML_INACTIVE), target_xml
            ),
        }
        if migrate_uri:
            params[libvirt.VIR_MIGRATE_PARAM_URI] = migrate_uri
        if disks_uri:
            params[libvirt.VIR_MIGRATE_PARAM_DISKS_URI] = disks_uri
        outcome: dict = {}

        def run() -> None:
            try:
                outcome["domain"] = domain.migrate3(target._conn, params, flags)
            except libvirt.libvirtError as error:
                outcome["error"] = error

        started = time.monotonic()
        worker = threading.Thread(target=run, name=f"migrate-{name}", daemon=True)
        worker.start()
        aborted = False
        while worker.is_alive():
            worker.join(poll)
            if not worker.is_alive() or progress is None:
                continue
            fraction = _fraction_done(domain)
            if fraction is not None and not progress(fraction) and not aborted:
                log.warning("migration of %s: cancelled; aborting its job", name)
                with contextlib.suppress(libvirt.libvirtError):
                    domain.abortJob()
                aborted = True
        seconds = time.monotonic() - started
        if "error" in outcome:
            raise outcome["error"]
        stats = _completed_stats(outcome["domain"]) or {}
        return MigrationResult(
            downtime_ms=stats.get("downtime"),
            seconds=seconds,
            memory_bytes=stats.get("memory_processed"),
            disk_bytes=stats.get("disk_processed"),
        )


def _fraction_done(domain: libvirt.virDomain) -> float | None:
    """How far the migration job is (memory and disk bytes together), or None when libvirt has
    nothing to say yet (the job is starting or ending)."""
    try:
        stats = domain.jobStats(0)
    except libvirt.libvirtError:
        return None
    total = stats.get("disk_total", 0) + stats.get("memory_total", 0)
    done = stats.get("disk_processed", 0) + stats.get("memory_processed", 0)
    if not total:
        return None
    return min(done / total, 0.99)


def _completed_stats(domain: libvirt.virDomain) -> dict | None:
    """The finished migration's statistics, as the target recorded them (downtime in ms)."""
    try:
        return domain.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    except libvirt.libvirtError as error:
        log.info("no completed job statistics for %s: %s", domain.name(), error)
        return None
