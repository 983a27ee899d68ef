from django.urls import path

from . import views

app_name = "vms"

urlpatterns = [
    path("", views.vm_list, name="list"),
    path("new/", views.vm_create, name="create"),
    path("<uuid:vm_uuid>/", views.vm_detail, name="detail"),
    path("<uuid:vm_uuid>/live/", views.vm_live, name="live"),
    path("<uuid:vm_uuid>/usage/", views.vm_usage, name="usage"),
    path("<uuid:vm_uuid>/delete/", views.vm_delete, name="delete"),
    path("<uuid:vm_uuid>/reinstall/", views.vm_reinstall, name="reinstall"),
    path("<uuid:vm_uuid>/password/", views.vm_reset_password, name="reset_password"),
    path("<uuid:vm_uuid>/iso/", views.vm_iso, name="iso"),
    path("<uuid:vm_uuid>/rescue/", views.vm_rescue, name="rescue"),
    path("<uuid:vm_uuid>/resize/", views.vm_resize, name="resize"),
    path("<uuid:vm_uuid>/rescue/leave/", views.vm_leave_rescue, name="leave_rescue"),
    path("<uuid:vm_uuid>/power/<str:kind>/", views.vm_action, name="action"),
    path("<uuid:vm_uuid>/console/", views.vm_console, name="console"),
    path("<uuid:vm_uuid>/console/token/", views.vm_console_token, name="console_token"),
    path("<uuid:vm_uuid>/serial/", views.vm_serial, name="serial"),
    path("<uuid:vm_uuid>/snapshots/", views.vm_snapshot_take, name="snapshot_take"),
    path("<uuid:vm_uuid>/addresses/<int:address_id>/ptr/", views.vm_address_ptr, name="address_ptr"),
    path(
        "<uuid:vm_uuid>/snapshots/<int:snapshot_id>/revert/", views.vm_snapshot_revert, name="snapshot_revert"
    ),
    path(
        "<uuid:vm_uuid>/snapshots/<int:snapshot_id>/delete/", views.vm_snapshot_delete, name="snapshot_delete"
    ),
]
