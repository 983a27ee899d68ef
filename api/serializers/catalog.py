"""What customers may pick from: plans and images (no volume names, URLs or node facts)."""

from rest_framework import serializers

from images.models import Image
from vms.models import Plan


class PlanSerializer(serializers.ModelSerializer):
    class Meta:
        model = Plan
        fields = [
            "id",
            "name",
            "vcpus",
            "memory_mib",
            "disk_gb",
            "inbound_mbps",
            "outbound_mbps",
            "traffic_gib",
        ]


class ImageSerializer(serializers.ModelSerializer):
    class Meta:
        model = Image
        fields = ["id", "name", "os_family", "format", "min_disk_gb", "default_user", "cloud_init", "rescue"]


class ImageRefSerializer(serializers.ModelSerializer):
    class Meta:
        model = Image
        fields = ["id", "name"]
