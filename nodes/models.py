"""Hypervisor nodes, and the usage readings of each (node totals)."""

from django.db import models

from .choices import SERVING_STATUSES, NetworkMode, NodeStatus, VirtType


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
    network_name = models.CharField(
        "network",
        max_length=64,
        default="kvmpanel",
        help_text="The panel's isolated libvirt network, used in isolated mode (and by VMs made before "
        "the node had public addresses).",
    )
    network_mode = models.CharField(
        max_length=16,
        choices=NetworkMode.choices,
        default=NetworkMode.ISOLATED,
        help_text="Bridged: VM NICs join the host bridge named below. Routed: the host routes each VM's "
        "addresses to its tap (forwarding must be on). Registering or refreshing the node checks it.",
    )
    bridge = models.CharField(
        max_length=15,
        blank=True,
        help_text="Bridged mode: an existing bridge on the host (e.g. br0); the panel never changes it.",
    )
    console_host = models.CharField(
        "console address",
        max_length=255,
        default="127.0.0.1",
        help_text="Where the console bridge reaches this node's VNC servers: 127.0.0.1 for the "
        "local node, the node's management address for a remote one.",
    )
    network_problem = models.TextField(
        blank=True,
        help_text="What the last registration or refresh found missing for the network mode; no new VM "
        "is placed on the node until it is fixed.",
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
    ssh_host_key = models.TextField(
        "SSH host key",
        blank=True,
        help_text="qemu+ssh nodes: the host key staff confirmed at registration; only it is accepted.",
    )
    ssh_host_key_fingerprint = models.CharField("SSH host key fingerprint", max_length=100, blank=True)
    draining = models.BooleanField(
        default=False,
        help_text="Staff asked to empty the node: its VMs move to other nodes, a few at a time "
        "(KVMPANEL_DRAIN_PARALLEL), each by its own migrate operation.",
    )
    drain_started_at = models.DateTimeField(null=True, blank=True)
    drain_note = models.TextField(
        blank=True, help_text="What the drain could not move yet, and why (it tries again every few seconds)."
    )
    migration_uri = models.CharField(
        "incoming migration URI",
        max_length=255,
        blank=True,
        help_text="Where QEMU on another node sends a VM's memory when it moves here, e.g. "
        "tcp://10.0.0.12 (blank: libvirt picks the node's hostname). {vm} stands for the VM's UUID "
        "(unix:///run/kvmpanel-migrate/{vm}.sock).",
    )
    disks_uri = models.CharField(
        "incoming disks URI",
        max_length=255,
        blank=True,
        help_text="Where a moving VM's local disk is copied to (NBD), e.g. tcp://10.0.0.12 "
        "(blank: as the migration). {vm} stands for the VM's UUID.",
    )

    class Meta:
        db_table = "vms_node"  # the table keeps the name it had when nodes lived in vms/
        ordering = ["name"]

    def __str__(self):
        return self.name

    @property
    def queue(self) -> str:
        """The Celery queue for this node's work, so one slow node never stalls another."""
        return f"node.{self.name}"

    @property
    def accepts_changes(self) -> bool:
        """Whether its VMs take changes: a node in maintenance still serves its customers."""
        return self.status in SERVING_STATUSES

    @property
    def takes_new_vms(self) -> bool:
        return self.status == NodeStatus.ONLINE and not self.network_problem

    def incoming_uris(self, vm_uuid: str) -> tuple[str, str]:
        """Where a VM moving here sends its memory and its disks (blank: libvirt's default)."""
        return (
            self.migration_uri.replace("{vm}", vm_uuid),
            (self.disks_uri or "").replace("{vm}", vm_uuid),
        )


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


class NodeUsage(UsageSample):
    """A node's totals over its VMs, plus how many were running."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="usage", db_index=False)
    running_vms = models.PositiveIntegerField(default=0)

    METRICS = (*UsageSample.METRICS, "running_vms")

    OWNER_FIELD = "node_id"

    class Meta:
        db_table = "vms_nodeusage"
        verbose_name = "node usage sample"
        constraints = [
            models.UniqueConstraint(fields=["node", "bucket_seconds", "at"], name="one_node_usage_per_time")
        ]
        indexes = [models.Index(fields=["bucket_seconds", "at"], name="node_usage_by_time")]
