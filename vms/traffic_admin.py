"""The backoffice's traffic pages: each VM's monthly rows, staff's reset and lift, and the top users
of this month per node and per pool (vms/traffic.py does the work)."""

from django.contrib import admin, messages
from django.shortcuts import render
from django.urls import path
from django.utils import timezone

from accounts.admin import ReadOnlyAdmin
from network.models import Pool
from nodes.models import Node

from . import traffic
from .models import NetworkInterface, TrafficMonth

TOP = 10


@admin.action(description="Lift the traffic throttle for the rest of the month")
def lift_throttle(modeladmin, request, queryset):
    for vm in queryset:
        traffic.lift(vm, request.user)
    modeladmin.message_user(
        request, f"Throttle lifted for {queryset.count()} VM(s) until the month ends.", messages.SUCCESS
    )


@admin.action(description="Reset this month's traffic counter")
def reset_counter(modeladmin, request, queryset):
    for vm in queryset:
        traffic.lift(vm, request.user, reset=True)
    modeladmin.message_user(
        request,
        f"Traffic counter reset for {queryset.count()} VM(s) (and any throttle lifted).",
        messages.SUCCESS,
    )


@admin.register(TrafficMonth)
class TrafficMonthAdmin(ReadOnlyAdmin):
    list_display = ("vm", "month", "received", "sent", "total", "throttled_at", "lifted_at")
    list_filter = ("month", "vm__node")
    search_fields = ("vm__hostname", "vm__uuid", "vm__owner__username")
    list_select_related = ("vm",)
    date_hierarchy = "month"

    @admin.display(description="received", ordering="rx_bytes")
    def received(self, row):
        return traffic.human(row.rx_bytes)

    @admin.display(description="sent", ordering="tx_bytes")
    def sent(self, row):
        return traffic.human(row.tx_bytes)

    @admin.display(description="total")
    def total(self, row):
        return traffic.human(row.total_bytes)

    def get_urls(self):
        top = path("top/", self.admin_site.admin_view(self.top_view), name="vms_trafficmonth_top")
        return [top, *super().get_urls()]

    def top_view(self, request):
        """This month's biggest traffic users on each node and in each address pool."""
        month = traffic.month_of(timezone.now())
        by_node = [
            (node, list(traffic.top_users(month, TOP, vm__node=node)))
            for node in Node.objects.order_by("name")
        ]
        by_pool = [
            (
                pool,
                list(
                    traffic.top_users(
                        month,
                        TOP,
                        vm_id__in=NetworkInterface.objects.filter(addresses__pool=pool).values("vm_id"),
                    )
                ),
            )
            for pool in Pool.objects.order_by("name")
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": f"Top traffic users, {month:%B %Y}",
            "month": month,
            "by_node": by_node,
            "by_pool": by_pool,
            "opts": self.model._meta,
        }
        return render(request, "admin/vms/traffic_top.html", context)
