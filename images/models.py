"""The OS image library: templates that VM disks are made from, and where each one is placed."""

import secrets

from django.db import models
from django.utils import timezone

from nodes.models import Node


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

    # The names the panel gives image volumes (and the only ones staff may name: images.forms).
    OWN_VOLUME_PREFIX = "kvmpanel-image-"

    class Meta:
        db_table = "vms_image"  # the tables keep the names they had when images lived in vms/
        ordering = ["name"]

    def __str__(self):
        return self.name

    def save(self, *args, **kwargs):
        if not self.volume_name:  # added by URL: a name of the panel's own in every pool
            self.volume_name = f"{self.OWN_VOLUME_PREFIX}{secrets.token_hex(6)}"
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
        db_table = "vms_imageplacement"
        constraints = [
            models.UniqueConstraint(fields=["image", "node"], name="one_placement_per_image_and_node")
        ]

    def __str__(self):
        return f"{self.image} on {self.node}"

    def mark_ready(self) -> None:
        self.ready, self.placed_at = True, timezone.now()
        self.save(update_fields=["ready", "placed_at"])
