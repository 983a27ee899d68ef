"""Plans, customers' VMs, the operations that change them, and their usage readings."""

import datetime as dt
import secrets
import uuid

from django.conf import settings
from django.contrib.contenttypes.fields import GenericRelation
from django.db import models
from django.db.models import Exists, F, OuterRef, Q, Value
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils import timezone

from images.models import Image
from network.models import Address
from nodes.models import Node, UsageSample

from .choices import ACTIVE_OPERATION_STATUSES, PANEL_OWNED_STATES, OperationKind, OperationStatus, VMState

GIB = 1024**3
SNAPSHOT_ACTIONS = (OperationKind.SNAPSHOT, OperationKind.REVERT_SNAPSHOT, OperationKind.DELETE_SNAPSHOT)
# Operation parameters that must not outlive the operation.
SECRET_PARAMS = ("password_hash",)
# A retried task carries its own delay; the sweeper waits this much longer before it steps in.
RESEND_GRACE_SECONDS = 5
# The sweeper's wait between sends of one operation doubles this many times at most.
RESEND_BACKOFF_STEPS = 5


class Plan(models.Model):
    """A size a customer can pick: vCPUs, memory and disk."""

    name = models.CharField(max_length=64, unique=True)
    vcpus = models.PositiveSmallIntegerField()
    memory_mib = models.PositiveIntegerField("memory (MiB)")
    disk_gb = models.PositiveIntegerField("disk (GiB)")
    full_copy = models.BooleanField(
        "full disk copy",
        default=False,
        help_text="Give each VM a full copy of its image instead of a copy-on-write overlay "
        "(slower to create, independent of the image afterwards).",
    )
    max_snapshots = models.PositiveSmallIntegerField(
        "snapshots", default=3, help_text="How many snapshots a VM of this plan may hold at once."
    )
    ipv4_addresses = models.PositiveSmallIntegerField(
        "IPv4 addresses",
        default=1,
        help_text="Public IPv4 addresses each VM gets (on nodes that have pools).",
    )
    ipv6_networks = models.PositiveSmallIntegerField(
        "IPv6 networks",
        default=1,
        help_text="IPv6 allocations each VM gets: a /64 each, or single addresses, as the pool says.",
    )
    inbound_mbps = models.PositiveIntegerField(
        "inbound speed (Mbit/s)", default=0, help_text="What each VM may receive; 0 is unlimited."
    )
    outbound_mbps = models.PositiveIntegerField(
        "outbound speed (Mbit/s)", default=0, help_text="What each VM may send; 0 is unlimited."
    )
    traffic_gib = models.PositiveIntegerField(
        "monthly traffic (GiB)",
        default=0,
        help_text="Traffic (in and out together) each VM may use per calendar month before it is slowed "
        "down to the throttle speed; 0 is unlimited.",
    )
    max_firewall_rules = models.PositiveSmallIntegerField(
        "firewall rules",
        default=20,
        help_text="How many inbound rules a VM's firewall of this plan may hold.",
    )
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["vcpus", "memory_mib", "disk_gb"]

    def __str__(self):
        return f"{self.name} ({self.vcpus} vCPU, {self.memory_mib} MiB, {self.disk_gb} GiB)"

    @property
    def disk_bytes(self) -> int:
        return self.disk_gb * GIB

    @property
    def traffic_bytes(self) -> int:
        """The monthly allowance in bytes; 0 is unlimited."""
        return self.traffic_gib * GIB


class VirtualMachineQuerySet(models.QuerySet):
    def live(self):
        return self.exclude(state=VMState.DELETED)

    def owned_by(self, user):
        return self.filter(owner=user)

    def visible_to(self, user, include_deleted: bool = False):
        """Staff see every VM; a customer sees only their own."""
        qs = self if include_deleted else self.live()
        return qs if user.is_staff else qs.owned_by(user)

    def set_state_if(self, pk: int, expected: str, state: str) -> bool:
        """For watchers (the node monitor, the reconcile): write `state` only if the row still says
        `expected` (what they read before asking libvirt), the panel does not own the state, and no
        delete is under way. A state they read late can then never undo a task's write (a deleted
        VM coming back as "stopped"). True when the row changed."""
        # A VM being deleted or moved: its operation records the outcome (a moving VM's source says
        # "paused", then "stopped", before it runs on the target).
        deleting = Operation.objects.filter(
            vm=OuterRef("pk"), kind__in=(OperationKind.DELETE, OperationKind.MIGRATE)
        ).active()
        now = timezone.now()
        changed = (
            self.filter(pk=pk, state=expected)
            .exclude(state__in=PANEL_OWNED_STATES)
            .filter(~Exists(deleting))
            .update(state=state, state_changed_at=now, updated_at=now)
        )
        return bool(changed)


def _vnc_password() -> str:
    # VNC authentication uses at most 8 characters of the password.
    return secrets.token_urlsafe(6)[:8]


class VirtualMachine(models.Model):
    """A customer's VM. Its libvirt domain is named after `uuid`; `state` is the last known one."""

    uuid = models.UUIDField("UUID", default=uuid.uuid4, unique=True, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="vms")
    node = models.ForeignKey(Node, on_delete=models.PROTECT, related_name="vms")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="vms")
    image = models.ForeignKey(Image, on_delete=models.PROTECT, related_name="vms")
    hostname = models.CharField(max_length=253)
    display_name = models.CharField(max_length=100, blank=True)
    state = models.CharField(max_length=16, choices=VMState.choices, default=VMState.PROVISIONING)
    vnc_password = models.CharField(max_length=8, default=_vnc_password, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    state_changed_at = models.DateTimeField(default=timezone.now)
    deleted_at = models.DateTimeField(null=True, blank=True)
    iso = models.ForeignKey(
        Image,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="vms_with_iso",
        verbose_name="ISO",
        help_text="The ISO in the VM's CD drive.",
    )
    boot_from_iso = models.BooleanField(default=False, help_text="Start from the ISO, before the disk.")
    rescue_image = models.ForeignKey(
        Image,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="rescued_vms",
        help_text="Set while the VM runs a rescue system with its own disk as the second disk.",
    )
    installs = models.PositiveIntegerField(
        default=1, editable=False, help_text="Counts installs; each gets its own cloud-init instance id."
    )
    ready_at = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="When the guest finished its first boot (cloud-init done, read through its agent); "
        "empty while it boots for the first time after a create, reinstall or rescue.",
    )

    objects = VirtualMachineQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "virtual machine"
        constraints = [
            # One live VM per hostname per customer, so names in lists and confirmations are unambiguous.
            models.UniqueConstraint(
                fields=["owner", "hostname"],
                condition=~Q(state="deleted"),
                name="unique_live_hostname_per_owner",
            )
        ]
        # The VM list's order, so a page is read in order instead of sorting every VM first.
        indexes = [
            models.Index(fields=["owner", "-created_at", "-id"], name="vm_list_by_owner"),
            models.Index(fields=["-created_at", "-id"], name="vm_list_all"),
        ]

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse("vms:detail", args=[self.uuid])

    @property
    def name(self) -> str:
        return self.display_name or self.hostname

    @property
    def domain_name(self) -> str:
        """The libvirt name: the UUID (tests add a prefix so their domains are recognisable)."""
        return f"{settings.KVMPANEL_DOMAIN_PREFIX}{self.uuid}"

    @property
    def disk_volume(self) -> str:
        return f"{self.domain_name}.qcow2"

    @property
    def seed_volume(self) -> str:
        """The cloud-init NoCloud seed ISO (named after the domain, so deleting the VM removes it)."""
        return f"{self.domain_name}-seed.iso"

    @property
    def rescue_volume(self) -> str:
        return f"{self.domain_name}-rescue.qcow2"

    @property
    def rescue_seed_volume(self) -> str:
        return f"{self.domain_name}-rescue-seed.iso"

    @property
    def export_volume(self) -> str:
        """The node-side raw copy of the disk that a backup reads (removed when the backup ends)."""
        return f"{self.domain_name}-export.raw"

    @property
    def restore_volume(self) -> str:
        """Where a restore writes the backup's disk before it replaces the VM's own."""
        return f"{self.domain_name}-restore.raw"

    @property
    def instance_id(self) -> str:
        return f"{self.uuid}-{self.installs}"

    def allowed_actions(self) -> set[str]:
        """The operations that make sense from the last known state."""
        by_state = {
            VMState.RUNNING: {
                OperationKind.SHUTDOWN,
                OperationKind.FORCE_OFF,
                OperationKind.REBOOT,
                OperationKind.RESET_PASSWORD,
                OperationKind.CHANGE_ISO,
                *SNAPSHOT_ACTIONS,
            },
            VMState.STOPPED: {
                OperationKind.START,
                OperationKind.CHANGE_ISO,
                OperationKind.RESIZE,
                *SNAPSHOT_ACTIONS,
            },
            VMState.CRASHED: {OperationKind.START, OperationKind.FORCE_OFF},
            VMState.PAUSED: {OperationKind.FORCE_OFF},
        }
        # A reinstall rebuilds the disk from scratch, so it also mends a VM stuck in a bad state.
        reinstallable = (VMState.RUNNING, VMState.STOPPED, VMState.CRASHED, VMState.PAUSED, VMState.ERROR)
        if self.rescue_image_id:
            return self._rescue_actions()
        allowed = set(by_state.get(self.state, set()))
        if self.state in reinstallable:
            allowed.add(OperationKind.REINSTALL)
            allowed.add(OperationKind.RESCUE)
        # A restore brings a whole disk back: it also mends a VM whose disk or domain is gone.
        if self.state in (*reinstallable, VMState.MISSING):
            allowed.add(OperationKind.RESTORE)
        if self.state != VMState.DELETED:
            allowed.add(OperationKind.DELETE)
        return allowed

    def _rescue_actions(self) -> set[str]:
        """In rescue mode: power, leaving it, and deleting; nothing that changes the disks."""
        power = {
            VMState.RUNNING: {OperationKind.SHUTDOWN, OperationKind.FORCE_OFF, OperationKind.REBOOT},
            VMState.STOPPED: {OperationKind.START},
        }.get(self.state, set())
        ends = {OperationKind.LEAVE_RESCUE, OperationKind.DELETE} if self.state != VMState.DELETED else set()
        return power | ends

    @property
    def is_booting(self) -> bool:
        """Running, but its first boot (cloud-init) has not finished yet."""
        return self.state == VMState.RUNNING and self.ready_at is None and self._boot_is_watched

    @property
    def _boot_is_watched(self) -> bool:
        image = self.rescue_image if self.rescue_image_id else self.image
        return image.cloud_init

    def addresses(self):
        """Every address the VM's NICs hold, in the order they were given."""
        return Address.objects.filter(interface__vm=self).order_by("assigned_at", "pk")

    def set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.state_changed_at = timezone.now()
            self.save(update_fields=["state", "state_changed_at", "updated_at"])

    def active_operation(self):
        return self.operations.filter(status__in=ACTIVE_OPERATION_STATUSES).first()


def _local_mac() -> str:
    """A random locally administered unicast MAC (bit 1 of the first octet set, bit 0 clear)."""
    octets = bytearray(secrets.token_bytes(6))
    octets[0] = (octets[0] & 0xFC) | 0x02
    return ":".join(f"{octet:02x}" for octet in octets)


class NetworkInterface(models.Model):
    """A VM's NIC: its MAC stays for the VM's life; addresses are assigned to it (network.Address)."""

    vm = models.ForeignKey(
        VirtualMachine, on_delete=models.CASCADE, related_name="interfaces", verbose_name="VM"
    )
    mac = models.CharField("MAC address", max_length=17, unique=True, default=_local_mac, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    addresses = GenericRelation(
        Address,
        content_type_field="assigned_object_type",
        object_id_field="assigned_object_id",
        related_query_name="interface",
    )

    class Meta:
        ordering = ["vm", "pk"]
        verbose_name = "network interface"

    def __str__(self):
        return f"{self.vm.hostname} · {self.mac}"

    def get_absolute_url(self):
        return self.vm.get_absolute_url()

    @property
    def owner(self):
        return self.vm.owner

    @property
    def admin_url(self) -> str:
        """The VM's backoffice page (where staff add and remove its addresses)."""
        return reverse("admin:vms_virtualmachine_change", args=[self.vm_id])


class OperationQuerySet(models.QuerySet):
    def active(self):
        return self.filter(status__in=ACTIVE_OPERATION_STATUSES)

    def due_for_sending(self, now, resend_after: dt.timedelta):
        """Operations whose doorbell must ring again: still queued, or running on a lease that ran out
        (its worker died), and not rung since their backoff (next_send_at) passed. One never rung
        waits `resend_after` from its creation: the request that made it is about to ring."""
        rung_long_ago = Q(next_send_at__lte=now)
        never_rung = Q(next_send_at__isnull=True)
        queued = Q(status=OperationStatus.QUEUED) & (
            rung_long_ago | never_rung & Q(created_at__lte=now - resend_after)
        )
        orphaned = Q(status=OperationStatus.RUNNING, lease_expires_at__lt=now) & (rung_long_ago | never_rung)
        return self.filter(queued | orphaned)

    def stuck(self, now, after: dt.timedelta):
        """Active operations staff should look at: queued or running for longer than `after`
        without a live lease (rung again and again, or their worker is gone)."""
        waiting = Q(status=OperationStatus.QUEUED, created_at__lt=now - after)
        orphaned = Q(status=OperationStatus.RUNNING, lease_expires_at__lt=now)
        return self.filter(waiting | orphaned)

    def retrying(self):
        return self.filter(status=OperationStatus.QUEUED, attempt__gt=0)


class Operation(models.Model):
    """One change to a VM, run by a Celery task: what, by whom, and how it ended.

    The row is the truth and the queue only a doorbell (vms/engine.py). A worker takes an operation
    by claiming its lease (a conditional update: at most one worker acts on it) and renews the lease
    while it works; an operation left queued, or running on a lease that ran out, is rung again by
    the sweeper. Every transition is a conditional update, so a worker that lost its lease (it was
    cancelled, or another worker took over) can never overwrite the outcome.
    """

    kind = models.CharField(max_length=16, choices=OperationKind.choices)
    vm = models.ForeignKey(
        VirtualMachine, on_delete=models.CASCADE, related_name="operations", verbose_name="VM"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    status = models.CharField(max_length=16, choices=OperationStatus.choices, default=OperationStatus.QUEUED)
    attempt = models.PositiveSmallIntegerField(default=0)
    params = models.JSONField(
        default=dict,
        blank=True,
        help_text="What the task needs beyond the VM (e.g. the seed's settings); secrets are "
        "dropped when the operation ends.",
    )
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(
        null=True, blank=True, help_text="When its task was last sent to a worker."
    )
    sends = models.PositiveIntegerField(default=0, help_text="How many times its task was sent.")
    next_send_at = models.DateTimeField(
        null=True, blank=True, help_text="If nothing has taken it by then, the sweeper sends it again."
    )
    lease_owner = models.CharField(max_length=200, blank=True, help_text="The worker running it.")
    lease_expires_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="The worker renews it while it works; once passed, another takes over.",
    )

    objects = OperationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # At most one active operation per VM, enforced by the database.
            models.UniqueConstraint(
                fields=["vm"],
                condition=Q(status__in=ACTIVE_OPERATION_STATUSES),
                name="one_active_operation_per_vm",
            )
        ]
        indexes = [
            models.Index(fields=["status", "created_at"]),
            # A VM's history, newest first (its page, and the list's "last operation").
            models.Index(fields=["vm", "-created_at", "-id"], name="operation_history"),
        ]

    def __str__(self):
        return f"{self.get_kind_display()} {self.vm} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_OPERATION_STATUSES

    @property
    def duration(self):
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None

    # --- the worker's side: claim, renew, hand back, finish (each a conditional update) ---------

    @classmethod
    def claim(cls, pk: int, owner: str, lease: dt.timedelta) -> "Operation | None":
        """Take the operation for `owner` if it is queued, or running on a lease that ran out.

        None when someone else holds it or it has ended: at most one worker acts on an operation.
        """
        now = timezone.now()
        claimable = Q(status=OperationStatus.QUEUED) | Q(
            status=OperationStatus.RUNNING, lease_expires_at__lt=now
        )
        taken = cls.objects.filter(claimable, pk=pk).update(
            status=OperationStatus.RUNNING,
            attempt=F("attempt") + 1,
            lease_owner=owner,
            lease_expires_at=now + lease,
            started_at=Coalesce(F("started_at"), Value(now, output_field=models.DateTimeField())),
        )
        if not taken:
            return None
        return cls.objects.select_related("vm__node", "vm__plan", "vm__image", "vm__owner").get(pk=pk)

    def renew_lease(self, lease: dt.timedelta) -> bool:
        """Push the lease on; False when it is no longer ours (cancelled, or taken over)."""
        return bool(self._mine().update(lease_expires_at=timezone.now() + lease))

    def hand_back(self, error: str, retry_in: float) -> bool:
        """A transient failure: queued again, to be tried in `retry_in` seconds (by the retried task,
        or by the sweeper if that message is lost). False when the lease is no longer ours."""
        now = timezone.now()
        message = f"attempt {self.attempt} failed, retrying: {error}"
        handed = self._mine().update(
            status=OperationStatus.QUEUED,
            error=message,
            lease_owner="",
            lease_expires_at=None,
            next_send_at=now + dt.timedelta(seconds=retry_in + RESEND_GRACE_SECONDS),
        )
        if handed:
            self.status, self.error = OperationStatus.QUEUED, message
        return bool(handed)

    def finish(self, status: str, error: str = "", *, lease_owner: str | None = None) -> bool:
        """End the operation (succeeded, failed or cancelled). A worker passes its lease: the end is
        written only while the lease is still its own. Staff (a cancel) pass none: it is written
        while the operation is active. Secrets go with it. False when nothing was written."""
        rows = Operation.objects.filter(pk=self.pk)
        if lease_owner is not None:
            rows = rows.filter(status=OperationStatus.RUNNING, lease_owner=lease_owner)
        else:
            rows = rows.active()
        ended = rows.update(
            status=status,
            error=error,
            finished_at=timezone.now(),
            params=self._params_without_secrets(),
            lease_owner="",
            lease_expires_at=None,
            next_send_at=None,
        )
        if ended:
            self.status, self.error = status, error
            self.params = self._params_without_secrets()
        return bool(ended)

    def _mine(self):
        """This operation, while it still runs on our lease."""
        held = Q(status=OperationStatus.RUNNING, lease_owner=self.lease_owner)
        return Operation.objects.filter(held, pk=self.pk)

    def _params_without_secrets(self) -> dict:
        # A finished operation needs no secrets: the hash was only there to build the seed.
        params = Operation.objects.filter(pk=self.pk).values_list("params", flat=True).first() or self.params
        return {key: value for key, value in params.items() if key not in SECRET_PARAMS}

    def mark_failed(self, error: str) -> None:
        """Fail an operation that no worker holds (the password never came, staff gave up on it)."""
        self.finish(OperationStatus.FAILED, error)

    # --- the doorbell's side ------------------------------------------------------------------

    def record_sent(self, resend_after: float) -> None:
        """The task was just sent; ring again after `resend_after` seconds, doubled at each send."""
        now = timezone.now()
        backoff = resend_after * 2 ** min(self.sends, RESEND_BACKOFF_STEPS)
        Operation.objects.filter(pk=self.pk).update(
            sent_at=now, sends=F("sends") + 1, next_send_at=now + dt.timedelta(seconds=backoff)
        )
        self.sends += 1


class Snapshot(models.Model):
    """An internal snapshot of a VM's disk (and memory, if it was running), kept on its node.

    The row is written by the task once libvirt has the snapshot, and deleted once libvirt no
    longer has it, so a row always names a snapshot that exists. `name` is the libvirt name.
    """

    vm = models.ForeignKey(
        VirtualMachine, on_delete=models.CASCADE, related_name="snapshots", verbose_name="VM"
    )
    name = models.CharField(max_length=64)
    description = models.CharField(max_length=200, blank=True)
    vm_state = models.CharField(
        max_length=16, help_text="running: the memory was saved too, and a revert resumes the VM running."
    )
    created_at = models.DateTimeField(default=timezone.now)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["vm", "name"], name="one_snapshot_name_per_vm")]

    def __str__(self):
        return self.description or self.name

    @property
    def with_memory(self) -> bool:
        return self.vm_state == VMState.RUNNING


class VMUsage(UsageSample):
    """A VM's usage over one interval (see nodes.models.UsageSample)."""

    vm = models.ForeignKey(VirtualMachine, on_delete=models.CASCADE, related_name="usage", db_index=False)

    OWNER_FIELD = "vm_id"

    class Meta:
        verbose_name = "VM usage sample"
        constraints = [
            models.UniqueConstraint(fields=["vm", "bucket_seconds", "at"], name="one_vm_usage_per_time")
        ]
        indexes = [models.Index(fields=["bucket_seconds", "at"], name="vm_usage_by_time")]


class TrafficMonth(models.Model):
    """A VM's network traffic in one billing month (a calendar month, UTC), from its NICs' counters.

    The node monitor adds what the counters grew by since its last reading (`last_rx`, `last_tx`, kept
    here so a restarted monitor goes on where it was); a counter that went down (the VM restarted)
    counts from zero. A new month starts a new row, so a throttle ends with its month.
    """

    vm = models.ForeignKey(
        VirtualMachine, on_delete=models.CASCADE, related_name="traffic", verbose_name="VM"
    )
    month = models.DateField(help_text="The month's first day.")
    rx_bytes = models.BigIntegerField("received", default=0)
    tx_bytes = models.BigIntegerField("sent", default=0)
    last_rx = models.BigIntegerField(null=True, blank=True, editable=False)
    last_tx = models.BigIntegerField(null=True, blank=True, editable=False)
    throttled_at = models.DateTimeField(
        null=True, blank=True, help_text="When the VM used up its allowance and was slowed down."
    )
    lifted_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When staff lifted the throttle (lifted for the rest of the month), or the month ended.",
    )
    speed_changed_at = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="When a throttle or its lifting changed the VM's speeds.",
    )
    speed_applied_at = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="When the node last applied them (see vms/traffic.py).",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-month", "vm"]
        verbose_name = "monthly traffic"
        verbose_name_plural = "monthly traffic"
        constraints = [models.UniqueConstraint(fields=["vm", "month"], name="one_traffic_row_per_vm_month")]
        indexes = [models.Index(fields=["month", "vm"], name="traffic_by_month")]

    def __str__(self):
        return f"{self.vm} · {self.month:%Y-%m}"

    @property
    def total_bytes(self) -> int:
        return self.rx_bytes + self.tx_bytes

    @property
    def is_throttled(self) -> bool:
        return self.throttled_at is not None and self.lifted_at is None
