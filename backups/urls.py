from django.urls import path

from . import views

app_name = "backups"

urlpatterns = [
    path("<uuid:vm_uuid>/backups/", views.vm_backups, name="vm"),
    path("<uuid:vm_uuid>/backups/start/", views.vm_backup_start, name="start"),
    path("<uuid:vm_uuid>/backups/schedule/", views.vm_backup_schedule, name="schedule"),
    path("<uuid:vm_uuid>/backups/<int:backup_id>/restore/", views.vm_backup_restore, name="restore"),
]
