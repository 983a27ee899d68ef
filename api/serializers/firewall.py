"""A VM's firewall: its default policy and inbound rules (all replaced at once)."""

from rest_framework import serializers

from firewall.choices import Policy, Protocol
from firewall.models import FirewallRule


class FirewallRuleSerializer(serializers.ModelSerializer):
    protocol = serializers.ChoiceField(choices=Protocol.choices)
    port_start = serializers.IntegerField(
        required=False, allow_null=True, default=None, help_text="TCP and UDP only: 1-65535."
    )
    port_end = serializers.IntegerField(
        required=False,
        allow_null=True,
        default=None,
        help_text="The end of a range (at least port_start); empty for a single port.",
    )
    source = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=43,
        help_text="An IPv4 or IPv6 network (CIDR), normalized; empty for anywhere (both families).",
    )
    comment = serializers.CharField(required=False, allow_blank=True, default="", max_length=100)

    class Meta:
        model = FirewallRule
        fields = ["protocol", "port_start", "port_end", "source", "comment"]
        # The model's own checks (ports, ranges, sources) run in firewall.actions, for every rule at once.
        validators = []


class FirewallSerializer(serializers.Serializer):
    default_policy = serializers.ChoiceField(
        choices=Policy.choices,
        help_text="deny: only what a rule allows gets in (and replies to the VM's own).",
    )
    rules = FirewallRuleSerializer(many=True, help_text="Inbound allow rules, in order.")
    max_rules = serializers.IntegerField(read_only=True, help_text="How many rules the VM's plan allows.")
    applying = serializers.BooleanField(read_only=True, help_text="A change is being put on the node.")
