from django.contrib.admin.views.decorators import staff_member_required
from django.http import JsonResponse
from django.shortcuts import get_object_or_404

from . import usage
from .models import Node, NodeUsage


@staff_member_required
def node_usage(request, node_id):
    """Graph data for a node's totals over its VMs (staff only)."""
    node = get_object_or_404(Node, pk=node_id)
    return usage_response(request, NodeUsage.objects.filter(node=node), memory_mib=node.memory_mib)


def usage_response(request, samples, memory_mib: int, running: bool = True) -> JsonResponse:
    """The graph data of `samples` (one owner's) over the range the page asks for; `running`: whether
    new readings are coming (a stopped VM's graph shows no newest values as if they were current)."""
    range_name = request.GET.get("range", "hour")
    if range_name not in usage.RANGES:
        return JsonResponse({"error": f"range must be one of: {', '.join(usage.RANGES)}"}, status=400)
    data = usage.series(samples, range_name)
    return JsonResponse({**data, "memory_total": memory_mib * 1024 * 1024, "running": running})
