"""VMs, their operations and the input of each action. Never a VNC password, a node URI or a secret param."""

from rest_framework import serializers

from images.models import Image
from vms import traffic
from vms.forms import CreateVMForm, ReinstallForm, RescueForm, ResetPasswordForm, ResizeForm
from vms.models import Operation, VirtualMachine

from .catalog import ImageRefSerializer, PlanSerializer
from .forms import FormValidated, object_id

MAX_PASSWORD_CHARS = 128  # bcrypt reads 72 bytes; the form says so; this bounds the work before it
MAX_USER_DATA_CHARS = 64 * 1024  # the form allows 16 KiB; this bounds the request first
MAX_KEYS = 50


class AddAddressInput(serializers.Serializer):
    family = serializers.ChoiceField(
        choices=[4, 6], help_text="4: one more IPv4 address; 6: one more IPv6 network."
    )


class NodeRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()


class AddressSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    family = serializers.IntegerField(help_text="4 or 6.")
    address = serializers.CharField(help_text="The address, or the first address of an IPv6 network.")
    prefix_length = serializers.IntegerField(help_text="32 or 128 for one address, 64 for a network.")
    cidr = serializers.CharField()
    host_address = serializers.CharField(help_text="What the VM answers on (::1 of its own IPv6 network).")
    ptr = serializers.CharField(help_text="Its reverse DNS name (PTR record of host_address); empty: none.")
    ptr_pending = serializers.BooleanField(
        help_text="The DNS server does not have this name yet (it is sent again until it does)."
    )


class SetPTRInput(serializers.Serializer):
    ptr = serializers.CharField(
        max_length=254,
        allow_blank=True,
        help_text="A fully qualified host name, e.g. mail.example.com; empty: none.",
    )


class VMSerializer(serializers.ModelSerializer):
    name = serializers.CharField(read_only=True, help_text="The display name, or the hostname.")
    owner = serializers.CharField(source="owner.username", read_only=True)
    plan = PlanSerializer(read_only=True)
    image = ImageRefSerializer(read_only=True)
    iso = ImageRefSerializer(read_only=True, allow_null=True)
    rescue_image = ImageRefSerializer(
        read_only=True, allow_null=True, help_text="Set while the VM runs a rescue system."
    )
    node = serializers.SerializerMethodField(help_text="Staff only; null for customers.")
    allowed_actions = serializers.SerializerMethodField(
        help_text="The operations that make sense in the VM's last known state."
    )
    addresses = serializers.SerializerMethodField(help_text="Its public addresses, in the order given.")
    booting = serializers.BooleanField(
        source="is_booting", read_only=True, help_text="Running, but its first boot has not finished yet."
    )
    ready_at = serializers.DateTimeField(
        read_only=True, help_text="When its first boot (cloud-init) finished; null while it boots."
    )

    class Meta:
        model = VirtualMachine
        fields = [
            "uuid",
            "hostname",
            "display_name",
            "name",
            "state",
            "owner",
            "plan",
            "image",
            "iso",
            "boot_from_iso",
            "rescue_image",
            "node",
            "allowed_actions",
            "addresses",
            "booting",
            "ready_at",
            "created_at",
            "state_changed_at",
        ]

    def get_node(self, vm) -> NodeRefSerializer(allow_null=True):
        request = self.context.get("request")
        if request is None or not request.user.is_staff:
            return None
        return {"id": vm.node_id, "name": vm.node.name}

    def get_addresses(self, vm) -> AddressSerializer(many=True):
        # From the NICs prefetched with the VMs (one query for a whole page).
        held = [address for nic in vm.interfaces.all() for address in nic.addresses.all()]
        held.sort(key=lambda address: (address.assigned_at, address.pk))
        return AddressSerializer(held, many=True).data

    def get_allowed_actions(self, vm) -> list[str]:
        return sorted(vm.allowed_actions())


class TrafficSerializer(serializers.Serializer):
    month = serializers.CharField(help_text="The billing month (calendar month, UTC), YYYY-MM.")
    received_bytes = serializers.IntegerField()
    sent_bytes = serializers.IntegerField()
    used_bytes = serializers.IntegerField(help_text="Received and sent together: what the allowance counts.")
    allowance_bytes = serializers.IntegerField(allow_null=True, help_text="null: unlimited.")
    percent = serializers.FloatField(allow_null=True, help_text="Of the allowance; null when unlimited.")
    throttled = serializers.BooleanField(help_text="Slowed down for the rest of the month (allowance used).")
    throttled_at = serializers.DateTimeField(allow_null=True)
    resets_on = serializers.DateField(help_text="When the counter starts again and a throttle ends.")
    inbound_mbps = serializers.IntegerField(
        allow_null=True, help_text="The plan's port speed; null: unlimited."
    )
    outbound_mbps = serializers.IntegerField(
        allow_null=True, help_text="The plan's port speed; null: unlimited."
    )


class VMDetailSerializer(VMSerializer):
    """One VM, with its traffic this month (not in lists: one more query per VM)."""

    traffic = serializers.SerializerMethodField()

    class Meta(VMSerializer.Meta):
        fields = [*VMSerializer.Meta.fields, "traffic"]

    def get_traffic(self, vm) -> TrafficSerializer:
        return TrafficSerializer(traffic.summary(vm).as_dict()).data


class OperationSerializer(serializers.ModelSerializer):
    """What was asked, by whom, and how it ended; never its parameters (they may hold secrets)."""

    vm = serializers.UUIDField(source="vm.uuid", read_only=True)
    user = serializers.CharField(source="user.username", read_only=True, allow_null=True, default=None)

    class Meta:
        model = Operation
        fields = [
            "id",
            "vm",
            "kind",
            "status",
            "user",
            "attempt",
            "error",
            "created_at",
            "started_at",
            "finished_at",
        ]


def _password(**kwargs):
    return serializers.CharField(
        write_only=True, trim_whitespace=False, max_length=MAX_PASSWORD_CHARS, **kwargs
    )


class FirstBootInput(FormValidated):
    password = _password(
        required=False, allow_blank=True, help_text="For the image's default user; stored only as a hash."
    )
    ssh_keys = serializers.ListField(
        child=object_id(), required=False, max_length=MAX_KEYS, help_text="Ids of your SSH keys."
    )
    user_data = serializers.CharField(
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        max_length=MAX_USER_DATA_CHARS,
        help_text="Optional #cloud-config YAML (16 KiB at most).",
    )


class CreateVMInput(FirstBootInput):
    form_class = CreateVMForm

    plan = object_id(help_text="An active plan's id (GET /api/v1/plans/).")
    image = object_id(help_text="A usable image's id (GET /api/v1/images/?kind=os).")
    hostname = serializers.CharField(max_length=253)
    display_name = serializers.CharField(max_length=100, required=False, allow_blank=True)


class ReinstallInput(FirstBootInput):
    form_class = ReinstallForm

    image = object_id()
    confirm_hostname = serializers.CharField(
        max_length=253, help_text="The VM's hostname, to confirm that its disk is wiped."
    )


class RescueInput(FirstBootInput):
    form_class = RescueForm

    image = object_id(help_text="A rescue system's id (GET /api/v1/images/?kind=rescue).")
    user_data = None  # a rescue system takes no cloud-config


class ResetPasswordInput(FormValidated):
    form_class = ResetPasswordForm

    password = _password()


class ResizeInput(FormValidated):
    form_class = ResizeForm

    plan = object_id(help_text="The new plan's id: an offered plan with at least the VM's disk size.")


class ChangeISOInput(serializers.Serializer):
    iso = serializers.PrimaryKeyRelatedField(
        queryset=Image.objects.isos(), allow_null=True, help_text="An ISO's id, or null to eject."
    )
    boot = serializers.BooleanField(default=False, help_text="Start from the ISO, before the disk.")


class ConsoleTokenSerializer(serializers.Serializer):
    url = serializers.CharField(
        help_text="The console bridge's websocket URL with a one-time ticket, valid for seconds. "
        "The bridge also checks the browser session of the same user."
    )


class UsageSeriesSerializer(serializers.Serializer):
    t = serializers.ListField(child=serializers.FloatField(), help_text="Epoch seconds.")
    cpu_percent = serializers.ListField(child=serializers.FloatField(allow_null=True))
    memory_bytes = serializers.ListField(child=serializers.FloatField(allow_null=True))
    disk_read_bps = serializers.ListField(child=serializers.FloatField(allow_null=True))
    disk_write_bps = serializers.ListField(child=serializers.FloatField(allow_null=True))
    net_rx_bps = serializers.ListField(child=serializers.FloatField(allow_null=True))
    net_tx_bps = serializers.ListField(child=serializers.FloatField(allow_null=True))


class UsageSerializer(serializers.Serializer):
    range = serializers.ChoiceField(choices=["hour", "day", "month"])
    step = serializers.IntegerField(help_text="Seconds between points.")
    series = UsageSeriesSerializer()
    memory_total = serializers.IntegerField(help_text="The plan's memory, in bytes.")

    def to_representation(self, instance):
        return instance  # already plain data from nodes.usage.series

    def get_fields(self):
        fields = super().get_fields()
        fields["from"] = serializers.FloatField(help_text="Epoch seconds.")
        fields["to"] = serializers.FloatField(help_text="Epoch seconds.")
        return fields
