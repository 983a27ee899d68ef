import secrets
import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from .choices import (
    ACTIVE_OPERATION_STATUSES,
    NodeStatus,
    OperationKind,
    OperationStatus,
    VirtType,
    VMState,
)

GIB = 1024**3
# Operation parameters that must not outlive the operation.
SECRET_PARAMS = ("password_hash",)


class Node(models.Model):
    """A hypervisor host, reached through its libvirt URI. Capacity is as libvirt last reported it."""

    name = models.CharField(max_length=64, unique=True)
    uri = models.CharField("libvirt URI", max_length=255, unique=True)
    status = models.CharField(max_length=16, choices=NodeStatus.choices, default=NodeStatus.ONLINE)
    virt_type = models.CharField(
        "virtualization",
        max_length=8,
        choices=VirtType.choices,
        default=VirtType.KVM,
        help_text="Chosen when the node is registered (KVMPANEL_VIRT_TYPE overrides); "
        "change it only on purpose: it applies to VMs defined from then on.",
    )
    pool_name = models.CharField("storage pool", max_length=64, default="kvmpanel")
    network_name = models.CharField("network", max_length=64, default="kvmpanel")
    console_host = models.CharField(
        "console address",
        max_length=255,
        default="127.0.0.1",
        help_text="Where the console bridge reaches this node's VNC servers: 127.0.0.1 for the "
        "local node, the node's management address for a remote one.",
    )
    hostname = models.CharField(max_length=255, blank=True)
    cpus = models.PositiveIntegerField("CPUs", default=0)
    memory_mib = models.PositiveBigIntegerField("memory (MiB)", default=0)
    storage_capacity_bytes = models.PositiveBigIntegerField(default=0)
    storage_available_bytes = models.PositiveBigIntegerField(default=0)
    libvirt_version = models.CharField(max_length=32, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    stray_domains = models.JSONField(
        default=list,
        blank=True,
        help_text="Domains on this node that no VM of the panel owns, as the last reconcile "
        "found them. The panel never touches them.",
    )
    reconciled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    @property
    def queue(self) -> str:
        """The Celery queue for this node's work, so one slow node never stalls another."""
        return f"node.{self.name}"

    @property
    def accepts_changes(self) -> bool:
        return self.status == NodeStatus.ONLINE


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
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["vcpus", "memory_mib", "disk_gb"]

    def __str__(self):
        return f"{self.name} ({self.vcpus} vCPU, {self.memory_mib} MiB, {self.disk_gb} GiB)"

    @property
    def disk_bytes(self) -> int:
        return self.disk_gb * GIB


class ImageQuerySet(models.QuerySet):
    def usable(self):
        """The operating systems customers may install: active disk images, placed on the nodes."""
        return self.filter(active=True, status=Image.Status.READY).exclude(format=Image.Format.ISO)

    def rescue_systems(self):
        """Images the operator offers as rescue systems (booted with the customer's disk as the second)."""
        return self.usable().filter(rescue=True)

    def isos(self):
        """The ISOs customers may put in a VM's CD drive."""
        return self.filter(active=True, status=Image.Status.READY, format=Image.Format.ISO)


class Image(models.Model):
    """An OS template: a volume in each node's storage pool that VM disks are made from.

    An image added by URL is downloaded and placed by a task; `status` and the byte
    counts show how far it got, and `error` why it stopped.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting to download"
        DOWNLOADING = "downloading", "Downloading"
        PLACING = "placing", "Copying to the nodes"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    class OSFamily(models.TextChoices):
        DEBIAN = "debian", "Debian"
        UBUNTU = "ubuntu", "Ubuntu"
        ALMALINUX = "almalinux", "AlmaLinux"
        ROCKY = "rocky", "Rocky Linux"
        OTHER_LINUX = "linux", "Other Linux"
        WINDOWS = "windows", "Windows"
        OTHER = "other", "Other"

    class Format(models.TextChoices):
        QCOW2 = "qcow2", "qcow2"
        RAW = "raw", "raw"
        ISO = "iso", "ISO (installer or rescue CD)"

    name = models.CharField(max_length=100, unique=True)
    os_family = models.CharField(max_length=16, choices=OSFamily.choices, default=OSFamily.DEBIAN)
    format = models.CharField(max_length=8, choices=Format.choices, default=Format.QCOW2)
    volume_name = models.CharField(
        max_length=200,
        unique=True,
        blank=True,
        help_text="Volume name in each node's storage pool (chosen for images added by URL).",
    )
    source_url = models.URLField(
        "download URL",
        max_length=2000,
        blank=True,
        help_text="http(s) address of a qcow2, raw or ISO image; the panel downloads and checks it.",
    )
    checksum_sha256 = models.CharField(
        "SHA-256",
        max_length=64,
        blank=True,
        help_text="Optional when adding by URL: the download must match it. Filled in from the file.",
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.READY)
    downloaded_bytes = models.PositiveBigIntegerField(default=0)
    total_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    size_bytes = models.PositiveBigIntegerField(default=0)
    min_disk_gb = models.PositiveIntegerField(default=2)
    default_user = models.CharField(max_length=32, default="debian")
    cloud_init = models.BooleanField(
        "uses cloud-init",
        default=True,
        help_text="VMs from this image get a NoCloud seed: hostname, password, SSH keys, network.",
    )
    rescue = models.BooleanField(
        "rescue system",
        default=False,
        help_text="Offer it for rescue mode. Its root file system must not share its UUID with "
        "customers' images (a separate build does not).",
    )
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    nodes = models.ManyToManyField(
        Node,
        through="ImagePlacement",
        related_name="images",
        blank=True,
        help_text="Nodes whose pool holds this image (VMs are only placed there).",
    )

    objects = ImageQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def save(self, *args, **kwargs):
        if not self.volume_name:  # added by URL: a name of the panel's own in every pool
            self.volume_name = f"kvmpanel-image-{secrets.token_hex(6)}"
        super().save(*args, **kwargs)

    def mark(self, status: str, error: str = "") -> None:
        self.status, self.error = status, error
        self.save(update_fields=["status", "error"])

    def record_progress(self, done: int, total: int | None) -> None:
        self.downloaded_bytes, self.total_bytes = done, total
        self.save(update_fields=["downloaded_bytes", "total_bytes"])

    def record_download(self, fetched) -> None:
        """What the downloaded file turned out to be (its checksum, format and size)."""
        self.checksum_sha256 = fetched.sha256
        self.format = fetched.format if fetched.format in self.Format.values else self.Format.RAW
        self.size_bytes = fetched.size_bytes
        self.save(update_fields=["checksum_sha256", "format", "size_bytes"])

    @property
    def progress_percent(self) -> int | None:
        if not self.total_bytes:
            return None
        return min(100, 100 * self.downloaded_bytes // self.total_bytes)

    def is_on(self, node: Node) -> bool:
        """Whether the node's pool holds a complete, checked copy."""
        return self.placements.filter(node=node, ready=True).exists()


class ImagePlacement(models.Model):
    """An image's volume in one node's pool. The row is written before the volume, `ready` once it is
    complete and checked: a volume whose row is not ready is the panel's own unfinished copy (a
    worker died while writing it), safe to replace; a volume with no row is not the panel's to delete.
    """

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="placements")
    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="image_placements")
    ready = models.BooleanField(default=False)
    placed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["image", "node"], name="one_placement_per_image_and_node")
        ]

    def __str__(self):
        return f"{self.image} on {self.node}"

    def mark_ready(self) -> None:
        self.ready, self.placed_at = True, timezone.now()
        self.save(update_fields=["ready", "placed_at"])


class VirtualMachineQuerySet(models.QuerySet):
    def live(self):
        return self.exclude(state=VMState.DELETED)

    def owned_by(self, user):
        return self.filter(owner=user)

    def visible_to(self, user, include_deleted: bool = False):
        """Staff see every VM; a customer sees only their own."""
        qs = self if include_deleted else self.live()
        return qs if user.is_staff else qs.owned_by(user)


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
            },
            VMState.STOPPED: {OperationKind.START, OperationKind.CHANGE_ISO, OperationKind.RESIZE},
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

    def set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.state_changed_at = timezone.now()
            self.save(update_fields=["state", "state_changed_at", "updated_at"])

    def active_operation(self):
        return self.operations.filter(status__in=ACTIVE_OPERATION_STATUSES).first()


class Operation(models.Model):
    """One change to a VM, run by a Celery task: what, by whom, and how it ended."""

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

    def mark_running(self) -> None:
        self.status = OperationStatus.RUNNING
        self.attempt += 1
        self.started_at = self.started_at or timezone.now()
        self.save(update_fields=["status", "attempt", "started_at"])

    def mark_succeeded(self) -> None:
        self._finish(OperationStatus.SUCCEEDED, "")

    def mark_failed(self, error: str) -> None:
        self._finish(OperationStatus.FAILED, error)

    def mark_retrying(self, error: str) -> None:
        self.status = OperationStatus.QUEUED
        self.error = f"attempt {self.attempt} failed, retrying: {error}"
        self.save(update_fields=["status", "error"])

    def _finish(self, status: str, error: str) -> None:
        self.status = status
        self.error = error
        self.finished_at = timezone.now()
        # A finished operation needs no secrets: the hash was only there to build the seed.
        for secret in SECRET_PARAMS:
            self.params.pop(secret, None)
        self.save(update_fields=["status", "error", "finished_at", "params"])


class UsageSample(models.Model):
    """Usage over one interval: a raw sample (bucket_seconds 0) or the average of a rolled-up bucket.

    Rates are per second; CPU is a percentage of the capacity it belongs to
    (the VM's vCPUs, or the node's CPUs).
    """

    RAW = 0

    bucket_seconds = models.PositiveIntegerField(default=RAW)
    at = models.DateTimeField(help_text="When the sample was read, or the start of the bucket.")
    cpu_percent = models.FloatField(default=0)
    memory_bytes = models.BigIntegerField(null=True, blank=True)
    disk_read_bps = models.FloatField(default=0)
    disk_write_bps = models.FloatField(default=0)
    net_rx_bps = models.FloatField(default=0)
    net_tx_bps = models.FloatField(default=0)

    METRICS = ("cpu_percent", "memory_bytes", "disk_read_bps", "disk_write_bps", "net_rx_bps", "net_tx_bps")

    class Meta:
        abstract = True

    def __str__(self):
        return f"{self.at:%Y-%m-%d %H:%M:%S} ({self.bucket_seconds or 'raw'})"


class VMUsage(UsageSample):
    vm = models.ForeignKey(VirtualMachine, on_delete=models.CASCADE, related_name="usage", db_index=False)

    class Meta:
        verbose_name = "VM usage sample"
        constraints = [
            models.UniqueConstraint(fields=["vm", "bucket_seconds", "at"], name="one_vm_usage_per_time")
        ]
        indexes = [models.Index(fields=["bucket_seconds", "at"], name="vm_usage_by_time")]


class NodeUsage(UsageSample):
    """A node's totals over its VMs, plus how many were running."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="usage", db_index=False)
    running_vms = models.PositiveIntegerField(default=0)

    METRICS = (*UsageSample.METRICS, "running_vms")

    class Meta:
        verbose_name = "node usage sample"
        constraints = [
            models.UniqueConstraint(fields=["node", "bucket_seconds", "at"], name="one_node_usage_per_time")
        ]
        indexes = [models.Index(fields=["bucket_seconds", "at"], name="node_usage_by_time")]
