"""Plans and images a customer may pick (read only)."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import viewsets
from rest_framework.exceptions import ValidationError

from images.models import Image
from vms.models import Plan

from ..serializers.catalog import ImageSerializer, PlanSerializer
from .base import RateLimitedFirst

IMAGE_KINDS = {
    "os": Image.objects.usable,
    "iso": Image.objects.isos,
    "rescue": Image.objects.rescue_systems,
}


@extend_schema(tags=["catalog"])
class PlanViewSet(RateLimitedFirst, viewsets.ReadOnlyModelViewSet):
    """The active plans: sizes a new VM can have."""

    queryset = Plan.objects.filter(active=True)
    serializer_class = PlanSerializer
    ordering_fields = ["vcpus", "memory_mib", "disk_gb", "name"]


@extend_schema_view(
    list=extend_schema(
        parameters=[
            OpenApiParameter(
                "kind",
                OpenApiTypes.STR,
                enum=list(IMAGE_KINDS),
                description="os: to install; iso: for the CD drive; rescue: rescue systems. "
                "Default: all of them.",
            )
        ]
    )
)
@extend_schema(tags=["catalog"])
class ImageViewSet(RateLimitedFirst, viewsets.ReadOnlyModelViewSet):
    """Ready, active images: operating systems, ISOs and rescue systems."""

    serializer_class = ImageSerializer
    search_fields = ["name"]
    ordering_fields = ["name", "os_family"]

    def get_queryset(self):
        kind = self.request.query_params.get("kind")
        if kind is None or self.action != "list":
            return Image.objects.usable() | Image.objects.isos()
        if kind not in IMAGE_KINDS:
            raise ValidationError({"kind": [f"Use one of: {', '.join(IMAGE_KINDS)}."]})
        return IMAGE_KINDS[kind]()
