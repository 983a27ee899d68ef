from django.urls import path

from . import views

app_name = "firewall"

urlpatterns = [
    path("<uuid:vm_uuid>/firewall/", views.vm_firewall, name="vm"),
    path("<uuid:vm_uuid>/firewall/rules/", views.vm_firewall_add, name="add"),
    path("<uuid:vm_uuid>/firewall/rules/<int:rule_id>/remove/", views.vm_firewall_remove, name="remove"),
    path("<uuid:vm_uuid>/firewall/policy/", views.vm_firewall_policy, name="policy"),
]
