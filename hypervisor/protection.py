"""Snapshots and disk copies for backups: the verbs of data protection on one node.

Snapshots are internal qcow2 snapshots: they live inside the VM's own disk file, so they work on an
overlay over a shared backing image, travel with nothing else, and vanish with the disk. A running
VM's snapshot saves its memory too (libvirt's "system checkpoint"): the whole machine at one instant,
and a revert resumes it there.

A backup reads a point-in-time copy of the disk as the guest sees it (raw), made on the node: for a
running VM by libvirt's backup API in push mode (QEMU copies each block before the guest overwrites
it, while the guest runs on), with the guest's file systems frozen by its agent at that instant; for
a stopped VM by a conversion of the volume. The copy is read over a sparse libvirt stream (holes
are not sent), so this works for remote nodes too. Restores come back the same way.
"""

import contextlib
import logging
import time
from collections.abc import Callable

import libvirt

from . import xml
from .errors import Conflict, NotFound, OperationFailed
from .specs import DiskExport, SnapshotInfo

log = logging.getLogger(__name__)

STREAM_CHUNK_BYTES = 1024 * 1024
ZERO_CHUNK = bytes(STREAM_CHUNK_BYTES)
_AGENT_DOWN = {
    libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
    libvirt.VIR_ERR_AGENT_UNSYNCED,
    libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
    libvirt.VIR_ERR_OPERATION_UNSUPPORTED,
    libvirt.VIR_ERR_NO_SUPPORT,
}
Progress = Callable[[int, int], None]  # (done, total) bytes


class ProtectionVerbs:
    """Mixed into NodeSession (which gives `_conn`, `_panel_domain` and the `translated` wrapper)."""

    _conn: libvirt.virConnect

    # --- snapshots ----------------------------------------------------------

    def create_snapshot(self, name: str, snapshot: str, description: str = "") -> SnapshotInfo:
        """Take internal snapshot `snapshot` of domain `name`; an existing one of that name is returned."""
        domain = self._panel_domain(name)
        try:
            found = domain.snapshotLookupByName(snapshot, 0)
        except libvirt.libvirtError as error:
            if error.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
                raise
            # libvirt 9.0 refuses a snapshot beside checkpoints: the backups' chain ends here (the next
            # backup reads the whole disk again).
            _clear_checkpoints(domain)
            found = domain.snapshotCreateXML(
                xml.snapshot_xml(snapshot, description), libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
            )
        return _snapshot_info(found)

    def snapshots(self, name: str) -> list[SnapshotInfo]:
        domain = self._panel_domain(name)
        return sorted(
            (_snapshot_info(s) for s in domain.listAllSnapshots(0)), key=lambda s: (s.created_epoch, s.name)
        )

    def revert_snapshot(self, name: str, snapshot: str) -> None:
        """Put the domain back to the snapshot: its disk, and (if it was running) its memory and power."""
        domain = self._panel_domain(name)
        found = _lookup_snapshot(domain, snapshot)
        _clear_checkpoints(domain)  # the disk goes back in time: no checkpoint describes it any more
        # FORCE: a snapshot of a running VM may be reverted while the VM is stopped, and vice versa.
        domain.revertToSnapshot(found, libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_FORCE)

    def delete_snapshot(self, name: str, snapshot: str) -> bool:
        """Delete a snapshot (its data in the disk and libvirt's record); False if it was already gone."""
        domain = self._panel_domain(name)
        try:
            found = domain.snapshotLookupByName(snapshot, 0)
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
                return False
            raise
        found.delete(0)
        return True

    def delete_all_snapshots(self, name: str) -> int:
        """Delete every snapshot of the domain (e.g. before its disk is replaced); returns how many."""
        domain = self._panel_domain(name)
        removed = 0
        for snapshot in domain.listAllSnapshots(libvirt.VIR_DOMAIN_SNAPSHOT_LIST_ROOTS):
            # CHILDREN: one call removes a snapshot and everything taken after it on its branch.
            removed += 1 + snapshot.numChildren(libvirt.VIR_DOMAIN_SNAPSHOT_LIST_DESCENDANTS)
            snapshot.delete(libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_CHILDREN)
        return removed

    # --- disk copies for backups --------------------------------------------

    def export_disk(
        self,
        name: str,
        pool: str,
        volume: str,
        scratch: str,
        progress: Progress | None = None,
        checkpoint: str = "",
        since: str = "",
    ) -> DiskExport:
        """A point-in-time copy of the domain's first disk as volume `scratch` in `pool` (raw), or
        with `since` (a checkpoint of the domain) only the blocks written since it (see DiskExport).

        A running domain without snapshots also gets checkpoint `checkpoint` at the copy's instant
        (libvirt 9.0 refuses checkpoints beside snapshots; a stopped domain can have none made): the
        next copy can start from it. An incremental copy falls back to a full one when its checkpoint
        is gone or the node refuses it (a bitmap lost with an unclean stop): the domain's checkpoints
        are then dropped, and a new chain starts. A copy (and a checkpoint of that name) left by an
        earlier, interrupted run is thrown away first.
        """
        domain = self._panel_domain(name)
        storage = self._conn.storagePoolLookupByName(pool)
        capacity = storage.storageVolLookupByName(volume).info()[1]
        self.abort_disk_export(name, pool, scratch)
        if not domain.isActive():
            spec = xml.volume_xml(scratch, capacity, "raw")
            storage.createXMLFrom(spec, storage.storageVolLookupByName(volume), 0)
            return DiskExport(pool, scratch, capacity, "stopped")
        if domain.snapshotNum(0) > 0:
            checkpoint = since = ""
        if checkpoint:
            _delete_checkpoint(domain, checkpoint)
        if since and since not in _checkpoint_names(domain):
            since = ""
        job_copy = _job_copy(scratch)
        target = f"{xml.parse(storage.XMLDesc(0)).findtext('target/path')}/{job_copy}"
        # The chain cannot be trusted (or used) when the node refuses the incremental copy: a full
        # one then, with a new chain from it; and a full one without a checkpoint if even that fails.
        tries = [(checkpoint, since)] + [(checkpoint, "")] * bool(since) + [("", "")] * bool(checkpoint)
        frozen = _freeze(domain)
        try:
            for number, (checkpoint, since) in enumerate(tries, 1):
                try:
                    _begin_backup(domain, target, checkpoint, since)
                    break
                except libvirt.libvirtError as error:
                    if number == len(tries):
                        raise
                    log.warning(
                        "%s: backup with checkpoint %r since %r refused, trying less: %s",
                        name,
                        checkpoint,
                        since,
                        error,
                    )
                    self.abort_disk_export(name, pool, scratch)
                    _drop_checkpoints(domain)
        finally:
            if frozen:
                with contextlib.suppress(libvirt.libvirtError):
                    domain.fsThaw()
        _wait_for_backup_job(domain, progress)
        _refresh(storage)  # QEMU made the job's file: the pool learns of it
        consistency = "frozen" if frozen else "crash"
        if since:
            return DiskExport(pool, job_copy, capacity, consistency, checkpoint, since)
        # QEMU writes the ranges the guest zeroed (discarded) as allocated zeros, which a sparse stream
        # would send as data; libvirt's copy turns zero runs back into holes, on the node.
        copied = storage.storageVolLookupByName(job_copy)
        storage.createXMLFrom(xml.volume_xml(scratch, capacity, "raw"), copied, 0)
        copied.delete(0)
        return DiskExport(pool, scratch, capacity, consistency, checkpoint)

    def checkpoints(self, name: str) -> list[str]:
        """The names of the domain's checkpoints, oldest first."""
        return _checkpoint_names(self._panel_domain(name))

    def delete_checkpoints(self, name: str, keep: str = "") -> int:
        """Delete the domain's checkpoints, bitmaps and all; returns how many went.

        With `keep` (after a backup: only the chain's head stays) a stopped domain's are left for its
        next backup. Without, all go: a stopped domain is started paused for the moment it takes (no
        guest code runs), since only a running QEMU removes bitmaps from the disk (libvirt 9.0), and a
        bitmap left in the qcow2 file would make every later snapshot revert fail ("Device has active
        dirty bitmaps").
        """
        try:
            domain = self._panel_domain(name)
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return 0
            raise
        if keep:
            return _drop_checkpoints(domain, keep) if domain.isActive() else 0
        return _clear_checkpoints(domain)

    def abort_disk_export(self, name: str, pool: str, scratch: str) -> None:
        """Stop a backup job still copying (its worker died) and remove its scratch copy."""
        with contextlib.suppress(libvirt.libvirtError):
            domain = self._panel_domain(name)
            if domain.isActive() and domain.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE:
                domain.abortJob()
        storage = self._conn.storagePoolLookupByName(pool)
        _refresh(storage)
        for volume in (scratch, _job_copy(scratch)):
            with contextlib.suppress(libvirt.libvirtError):
                storage.storageVolLookupByName(volume).delete(0)

    def download_volume(self, pool: str, volume: str, sink: Callable[[bytes], None]) -> int:
        """Feed the volume's file, as stored (e.g. a qcow2 file's own bytes), to `sink`; holes are not
        sent but given as zeros. Returns the bytes that crossed the stream."""
        return self.read_volume(pool, volume, sink)

    def read_volume(self, pool: str, volume: str, sink: Callable[[bytes], None]) -> int:
        """Feed the volume's whole content to `sink` (holes as zeros); returns the bytes that crossed
        the stream (holes are not sent, so an empty disk costs almost nothing to read)."""
        source = self._conn.storagePoolLookupByName(pool).storageVolLookupByName(volume)
        stream = self._conn.newStream(0)
        sent = 0
        try:
            source.download(stream, 0, 0, libvirt.VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM)
            while True:
                data = stream.recvFlags(STREAM_CHUNK_BYTES, libvirt.VIR_STREAM_RECV_STOP_AT_HOLE)
                if data == -3:
                    _feed_zeros(sink, stream.recvHole(0))
                    continue
                if not data:
                    break
                sent += len(data)
                sink(data)
            stream.finish()
        except BaseException:
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
            raise
        return sent

    def write_volume(self, pool: str, volume: str, capacity_bytes: int, read: Callable[[int], bytes]) -> int:
        """Create raw volume `volume` from the bytes `read(n)` gives (zero runs sent as holes).

        A failure deletes the partial volume. Returns the bytes that crossed the stream.
        """
        storage = self._conn.storagePoolLookupByName(pool)
        with contextlib.suppress(libvirt.libvirtError):
            storage.storageVolLookupByName(volume).delete(0)
        target = storage.createXML(xml.volume_xml(volume, capacity_bytes, "raw"), 0)
        stream = self._conn.newStream(0)
        sent = 0
        try:
            target.upload(stream, 0, capacity_bytes, libvirt.VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM)
            while data := read(STREAM_CHUNK_BYTES):
                if data.count(0) == len(data):
                    stream.sendHole(len(data), 0)
                    continue
                sent += len(data)
                while data:
                    data = data[stream.send(data) :]
            stream.finish()
        except BaseException:
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
            with contextlib.suppress(libvirt.libvirtError):
                target.delete(0)
            raise
        return sent

    def convert_volume(self, pool: str, source: str, target: str, fmt: str = "qcow2") -> None:
        """Make volume `target` (format `fmt`) a full copy of `source`'s content, on the node."""
        storage = self._conn.storagePoolLookupByName(pool)
        original = storage.storageVolLookupByName(source)
        storage.createXMLFrom(xml.volume_xml(target, original.info()[1], fmt), original, 0)


def _refresh(storage: libvirt.virStoragePool, patience: float = 120, poll: float = 1) -> None:
    """Rescan the pool's directory. libvirt refuses while any volume of the pool is being uploaded,
    downloaded or copied (another backup, a seed, an image), so wait for a moment when it is free."""
    deadline = time.monotonic() + patience
    while True:
        try:
            storage.refresh(0)
            return
        except libvirt.libvirtError as error:
            if "asynchronous jobs" not in (error.get_error_message() or "") or time.monotonic() > deadline:
                raise
        time.sleep(poll)


def _begin_backup(domain: libvirt.virDomain, target: str, checkpoint: str, since: str) -> None:
    spec = xml.push_backup_xml("vda", target, since)
    marks = None
    if checkpoint:
        marks = xml.checkpoint_xml(checkpoint, xml.disk_targets(domain.XMLDesc(0)), "vda")
    domain.backupBegin(spec, marks, 0)


def _checkpoint_names(domain: libvirt.virDomain) -> list[str]:
    """Parents before their children: the oldest first."""
    return [c.getName() for c in domain.listAllCheckpoints(libvirt.VIR_DOMAIN_CHECKPOINT_LIST_TOPOLOGICAL)]


def _delete_checkpoint(domain: libvirt.virDomain, name: str, flags: int = 0) -> bool:
    """Delete one checkpoint of a running domain (libvirt merges its bitmap into its parent's, so the
    older ones still cover every write since them)."""
    try:
        found = domain.checkpointLookupByName(name, 0)
    except libvirt.libvirtError as error:
        if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_CHECKPOINT:
            return False
        raise
    found.delete(flags)
    return True


def _drop_checkpoints(domain: libvirt.virDomain, keep: str = "", flags: int = 0) -> int:
    removed = 0
    for name in _checkpoint_names(domain):  # oldest first: nothing is merged into what goes next
        if name != keep and _delete_checkpoint(domain, name, flags):
            removed += 1
    return removed


def _clear_checkpoints(domain: libvirt.virDomain) -> int:
    """Every checkpoint of the domain, with its bitmap (see delete_checkpoints). A stopped domain that
    cannot start (its disk already gone) loses only libvirt's records: there is no disk to clean."""
    if not _checkpoint_names(domain):
        return 0
    if domain.isActive():
        return _drop_checkpoints(domain)
    try:
        domain.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
    except libvirt.libvirtError:
        return _drop_checkpoints(domain, flags=libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)
    try:
        return _drop_checkpoints(domain)
    finally:
        domain.destroy()


def _job_copy(scratch: str) -> str:
    """Where the backup job writes, before the copy is made sparse into `scratch`."""
    return f"{scratch}.job"


def _snapshot_info(snapshot: libvirt.virDomainSnapshot) -> SnapshotInfo:
    info = xml.snapshot_info(snapshot.getXMLDesc(0))
    return SnapshotInfo(info["name"], info["created"], info["state"], info["memory"])


def _lookup_snapshot(domain: libvirt.virDomain, snapshot: str) -> libvirt.virDomainSnapshot:
    try:
        return domain.snapshotLookupByName(snapshot, 0)
    except libvirt.libvirtError as error:
        if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
            raise NotFound(f"the node has no snapshot {snapshot} of this VM") from error
        raise


def _freeze(domain: libvirt.virDomain) -> bool:
    """Freeze the guest's file systems through its agent; False when the agent does not answer."""
    try:
        domain.fsFreeze(None, 0)
    except libvirt.libvirtError as error:
        if error.get_error_code() in _AGENT_DOWN:
            return False
        raise
    return True


def _wait_for_backup_job(domain: libvirt.virDomain, progress: Progress | None, poll: float = 0.5) -> None:
    """Wait until the domain's backup job has copied everything; raise if it failed or vanished."""
    while True:
        try:
            stats = domain.jobStats(0)
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise NotFound("the VM went away while its disk was copied") from error
            raise
        if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
            break
        if progress and stats.get("disk_total"):
            progress(stats.get("disk_processed", 0), stats["disk_total"])
        time.sleep(poll)
    if not domain.isActive():
        raise Conflict("the VM stopped while its disk was copied")
    completed = domain.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    if not completed.get("success", False):
        raise OperationFailed(f"the node's disk copy failed: {completed.get('errmsg', 'no reason given')}")


def _feed_zeros(sink: Callable[[bytes], None], length: int) -> None:
    while length > 0:
        piece = min(length, STREAM_CHUNK_BYTES)
        sink(ZERO_CHUNK[:piece])
        length -= piece
