"""Backup stores, backups of VM disks, and the schedules that make them."""

import secrets
from datetime import datetime, timedelta

from django.conf import settings
from django.core.validators import MaxValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from vms.models import VirtualMachine

from .choices import ACTIVE_BACKUP_STATUSES, BackupKind, BackupStatus, Frequency, StoreKind

# The host and user become words of the ssh command restic runs: nothing that could pass as an option.
SSH_HOST = RegexValidator(r"^[A-Za-z0-9][A-Za-z0-9.:-]*$", "A host name or an address.")
SSH_USER = RegexValidator(r"^[A-Za-z_][A-Za-z0-9_.-]*$", "A user name (letters, digits, _ . -).")


def _repository_password() -> str:
    return secrets.token_urlsafe(32)


class BackupStore(models.Model):
    """A restic repository off the nodes: a directory on the panel's host, or a path on a host over SSH.

    The repository is encrypted with a password the panel generates and keeps here (never shown,
    never logged): keep a copy of the database's backups, or of this password, somewhere safe.
    """

    name = models.CharField(max_length=64, unique=True)
    kind = models.CharField(
        max_length=16,
        choices=StoreKind.choices,
        default=StoreKind.DIRECTORY,
        help_text="A directory on the panel's host (a local disk or an NFS mount), or a path on a host "
        "reached over SSH (sftp).",
    )
    path = models.CharField(
        max_length=255, help_text="The repository's directory (on the SSH host for sftp)."
    )
    host = models.CharField(
        max_length=255, blank=True, validators=[SSH_HOST], help_text="sftp: the SSH host's name or address."
    )
    port = models.PositiveIntegerField(default=22, validators=[MaxValueValidator(65535)])
    username = models.CharField(max_length=64, blank=True, validators=[SSH_USER])
    ssh_private_key = models.TextField(
        blank=True, help_text="sftp: the private key the panel signs in with (OpenSSH format)."
    )
    ssh_known_hosts = models.TextField(
        blank=True,
        help_text="sftp: the host's public key as a known_hosts line (ssh-keyscan -p PORT HOST); "
        "the panel connects only to a host that shows this key.",
    )
    repository_password = models.CharField(max_length=128, default=_repository_password, editable=False)
    is_default = models.BooleanField(
        default=False, help_text="Where backups go unless a schedule says otherwise."
    )
    used_bytes = models.BigIntegerField(null=True, blank=True, editable=False)
    checked_at = models.DateTimeField(null=True, blank=True, editable=False)
    check_ok = models.BooleanField(null=True, editable=False)
    check_message = models.TextField(blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    @classmethod
    def default(cls) -> "BackupStore | None":
        return cls.objects.filter(is_default=True).first() or cls.objects.order_by("pk").first()


class BackupQuerySet(models.QuerySet):
    def usable(self):
        """Complete backups: the only ones ever offered for a restore."""
        return self.filter(status=BackupStatus.SUCCEEDED)

    def active(self):
        return self.filter(status__in=ACTIVE_BACKUP_STATUSES)


class Backup(models.Model):
    """One backup of a VM's disk into a store (a restic snapshot of the disk as the guest sees it).

    It counts as complete only once restic has the whole disk and the panel has checked the
    snapshot's size; anything else stays queued, running or failed, and is never restored.
    """

    vm = models.ForeignKey(
        VirtualMachine, on_delete=models.CASCADE, related_name="backups", verbose_name="VM"
    )
    store = models.ForeignKey(BackupStore, on_delete=models.PROTECT, related_name="backups")
    kind = models.CharField(max_length=16, choices=BackupKind.choices, default=BackupKind.MANUAL)
    status = models.CharField(max_length=16, choices=BackupStatus.choices, default=BackupStatus.QUEUED)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    consistency = models.CharField(
        max_length=16, blank=True, help_text="frozen (file systems frozen), crash (agent silent) or stopped."
    )
    incremental = models.BooleanField(
        default=False,
        help_text="Only the blocks changed since the previous backup were read from the node (the store "
        "still holds the whole disk); otherwise the whole disk was read.",
    )
    checkpoint = models.CharField(
        max_length=64, blank=True, help_text="The node's checkpoint made at this backup's instant, if any."
    )
    restic_id = models.CharField("restic snapshot", max_length=64, blank=True)
    instance_id = models.CharField(max_length=64, blank=True, help_text="The guest's cloud-init instance.")
    sha256 = models.CharField(max_length=64, blank=True, help_text="Of the whole disk as backed up.")
    disk_bytes = models.BigIntegerField(default=0, help_text="The disk's size as the guest sees it.")
    bytes_read = models.BigIntegerField(default=0, help_text="Read from the node (holes are not sent).")
    bytes_added = models.BigIntegerField(
        default=0, help_text="New data the store kept (after deduplication)."
    )
    progress = models.FloatField(default=0)
    attempt = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    objects = BackupQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # One backup of a VM at a time: a second request while one is queued or running is refused.
            models.UniqueConstraint(
                fields=["vm"], condition=Q(status__in=ACTIVE_BACKUP_STATUSES), name="one_active_backup_per_vm"
            )
        ]
        indexes = [models.Index(fields=["status", "created_at"], name="backup_by_status")]

    def __str__(self):
        return f"{self.vm} at {timezone.localtime(self.created_at):%Y-%m-%d %H:%M}"

    @property
    def tag(self) -> str:
        """The restic tag that ties a snapshot to this row (a half-written one is found by it)."""
        return f"kvmpanel-backup-{self.pk}"

    @property
    def checkpoint_name(self) -> str:
        """The libvirt checkpoint this backup makes on the node (the next one reads only what changed)."""
        return f"kvmpanel-{self.pk}"

    @property
    def read_kind(self) -> str:
        return "incremental" if self.incremental else "full"

    @property
    def duration(self) -> timedelta | None:
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None


class BackupSchedule(models.Model):
    """When a VM is backed up by itself, and how many of its scheduled backups are kept."""

    vm = models.OneToOneField(VirtualMachine, on_delete=models.CASCADE, related_name="backup_schedule")
    store = models.ForeignKey(BackupStore, on_delete=models.PROTECT, related_name="schedules")
    frequency = models.CharField(max_length=8, choices=Frequency.choices, default=Frequency.DAILY)
    weekday = models.PositiveSmallIntegerField(
        default=6,
        help_text="Weekly: 0 is Monday, 6 Sunday.",
        choices=[
            (i, d)
            for i, d in enumerate(
                ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
            )
        ],
    )
    at = models.TimeField(
        default="02:00", help_text="In the panel's time zone; each VM starts a little after."
    )
    keep_last = models.PositiveSmallIntegerField(default=7, help_text="Keep the newest N backups.")
    keep_daily = models.PositiveSmallIntegerField(default=0, help_text="And the newest of each of N days.")
    keep_weekly = models.PositiveSmallIntegerField(default=0, help_text="And of each of N weeks.")
    keep_monthly = models.PositiveSmallIntegerField(default=0, help_text="And of each of N months.")
    enabled = models.BooleanField(default=True)
    next_run_at = models.DateTimeField(null=True, blank=True, editable=False)

    def __str__(self):
        return f"{self.get_frequency_display()} backup of {self.vm}"

    def next_after(self, moment: datetime) -> datetime:
        """The first run after `moment`: the slot (day or weekday at `at`) plus this VM's own offset, so
        a hundred VMs scheduled for 02:00 start spread over the next KVMPANEL_BACKUP_SPREAD_MINUTES."""
        local = timezone.localtime(moment)
        slot = local.replace(hour=self.at.hour, minute=self.at.minute, second=0, microsecond=0) + self.offset
        step = timedelta(days=1)
        if self.frequency == Frequency.WEEKLY:
            slot += timedelta(days=(self.weekday - slot.weekday()) % 7)
            step = timedelta(days=7)
        while slot <= local:
            slot += step
        return slot

    @property
    def offset(self) -> timedelta:
        spread = max(settings.KVMPANEL_BACKUP_SPREAD_MINUTES, 1) * 60
        return timedelta(seconds=self.vm.uuid.int % spread)
