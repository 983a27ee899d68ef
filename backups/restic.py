"""The one door to restic (Debian's `restic`): a thin wrapper, its own error, arguments as lists.

restic gives the store its format: content-defined chunks, deduplicated across every backup in the
repository (so a second backup of a barely changed disk adds only the changed chunks), encrypted
with the store's password, and verifiable (`restic check`). The password goes to restic in its
environment, never on a command line or in a log; an SSH store's key and known host go to ssh in
files only this process can read, removed when the command ends.
"""

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from .choices import StoreKind

DISK_FILENAME = "/disk.raw"
PIPE_CHUNK_BYTES = 1024 * 1024
_PR_SET_PDEATHSIG = 1


class ResticError(Exception):
    """restic failed; the message says why in words a person can act on."""


@dataclass(frozen=True)
class BackupSummary:
    snapshot_id: str
    bytes_processed: int
    bytes_added: int


def _die_with_parent() -> None:
    """In the child before exec: if the worker is killed (even SIGKILL), restic is killed too, so it never
    takes the end of its input for the end of the disk and commits half of one."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Repository:
    """One store's restic repository."""

    def __init__(self, store):
        self.store = store

    @contextlib.contextmanager
    def _environment(self) -> Iterator[tuple[list[str], dict]]:
        """(the common arguments, the environment) for one restic command."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            "RESTIC_PASSWORD": self.store.repository_password,
            "RESTIC_CACHE_DIR": settings.KVMPANEL_RESTIC_CACHE_DIR,
        }
        if self.store.kind == StoreKind.DIRECTORY:
            yield ["-r", self.store.path], env
            return
        self.store.full_clean(validate_unique=False)  # host and user are checked again before they reach ssh
        with tempfile.TemporaryDirectory(prefix="kvmpanel-ssh-") as folder:
            key, known = Path(folder, "key"), Path(folder, "known_hosts")
            key.write_text(self.store.ssh_private_key.strip() + "\n")
            key.chmod(0o600)
            known.write_text(self.store.ssh_known_hosts.strip() + "\n")
            ssh = (
                f"ssh -i {key} -p {int(self.store.port)} -o UserKnownHostsFile={known} "
                "-o StrictHostKeyChecking=yes -o BatchMode=yes -o IdentitiesOnly=yes "
                f"-o ConnectTimeout=15 {self.store.username}@{self.store.host} -s sftp"
            )
            yield (
                [
                    "-r",
                    f"sftp:{self.store.username}@{self.store.host}:{self.store.path}",
                    "-o",
                    f"sftp.command={ssh}",
                ],
                env,
            )

    def _run(self, *args: str, timeout: float = 3600) -> str:
        with self._environment() as (common, env):
            result = subprocess.run(
                [settings.KVMPANEL_RESTIC, *common, *args],
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
                preexec_fn=_die_with_parent,
            )
        if result.returncode != 0:
            raise ResticError(_reason(result.stderr))
        return result.stdout

    def ensure_initialized(self) -> None:
        """Create the repository if the store has none yet (its first backup)."""
        try:
            self._run("cat", "config", timeout=120)
        except ResticError:
            self._run("init", timeout=120)

    def backup_stream(
        self, feed: Callable[[Callable[[bytes], None]], None], tags: list[str]
    ) -> BackupSummary:
        """Back up the bytes `feed(write)` writes as one file. If `feed` raises, restic is killed before it
        sees the end of its input, so no snapshot of a partial disk is ever made."""
        tag_args = [arg for tag in tags for arg in ("--tag", tag)]
        args = [
            "backup",
            "--json",
            "--stdin",
            "--stdin-filename",
            DISK_FILENAME.lstrip("/"),
            "--host",
            "kvmpanel",
        ]
        with tempfile.TemporaryFile() as output:
            with self._streaming([*args, *tag_args], stdin=subprocess.PIPE, stdout=output) as process:
                try:
                    feed(process.stdin.write)
                    process.stdin.close()
                except BrokenPipeError:
                    pass  # restic stopped reading (store full, store gone): its exit says why, below
            output.seek(0)
            return _summary(output.read().decode())

    @contextlib.contextmanager
    def dump(self, snapshot_id: str) -> Iterator[Callable[[int], bytes]]:
        """A reader of the backed-up disk's bytes (`read(n)`); raises ResticError at the end if restic failed,
        so a missing or damaged backup is never taken for a short one."""
        with self._streaming(["dump", snapshot_id, DISK_FILENAME], stdout=subprocess.PIPE) as process:
            yield process.stdout.read
            process.stdout.close()

    @contextlib.contextmanager
    def _streaming(self, args: list[str], **pipes) -> Iterator[subprocess.Popen]:
        """A restic command whose input or output this process streams. If the caller fails, restic is
        killed (never left to finish on what it got); if restic fails, ResticError says why."""
        with self._environment() as (common, env), tempfile.TemporaryFile() as errors:
            process = subprocess.Popen(
                [settings.KVMPANEL_RESTIC, *common, *args],
                env=env,
                stderr=errors,
                preexec_fn=_die_with_parent,
                **pipes,
            )
            try:
                yield process
            except BaseException:
                process.kill()
                process.wait()
                raise
            if process.wait() != 0:
                errors.seek(0)
                raise ResticError(_reason(errors.read().decode(errors="replace")))

    def snapshot_ids(self, tag: str) -> list[str]:
        return [item["id"] for item in json.loads(self._run("snapshots", "--json", "--tag", tag) or "[]")]

    def forget(self, snapshot_ids: list[str]) -> None:
        """Remove snapshots, and the data only they used (prune)."""
        if snapshot_ids:
            self.unlock()
            self._run("forget", "--prune", *snapshot_ids)

    def unlock(self) -> None:
        """Remove locks left by restic processes that no longer run (a killed worker's)."""
        self._run("unlock", timeout=120)

    def check(self, read_percent: int) -> str:
        """Verify the repository's structure and read back `read_percent` % of its data; raises if damaged."""
        self.unlock()
        args = ["check"]
        if read_percent > 0:
            args.append(f"--read-data-subset={min(read_percent, 100)}%")
        lines = self._run(*args).strip().splitlines()
        return lines[-1] if lines else "no errors were found"

    def used_bytes(self) -> int:
        """What the repository takes in the store (after deduplication and compression)."""
        return int(json.loads(self._run("stats", "--json", "--mode", "raw-data"))["total_size"])


def _summary(output: str) -> BackupSummary:
    for line in reversed(output.splitlines()):
        with contextlib.suppress(ValueError):
            message = json.loads(line)
            if message.get("message_type") == "summary":
                return BackupSummary(
                    snapshot_id=message["snapshot_id"],
                    bytes_processed=int(message.get("total_bytes_processed", 0)),
                    bytes_added=int(message.get("data_added", 0)),
                )
    raise ResticError("restic finished without saying which snapshot it made")


def _reason(stderr: str) -> str:
    """restic's own last words, without the noise (progress lines, Go stack traces)."""
    lines = [
        line.strip() for line in stderr.splitlines() if line.strip() and not line.startswith("goroutine")
    ]
    fatal = [line for line in lines if line.lower().startswith(("fatal", "error", "ciphertext", "id "))]
    chosen = (fatal or lines or ["restic failed without a message"])[-1]
    return chosen.removeprefix("Fatal: ")[:500]
