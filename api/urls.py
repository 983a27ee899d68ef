"""/api/v1/: customer endpoints at the top, staff endpoints under admin/, the schema and its docs."""

from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import SimpleRouter

from .views import account, backups, catalog, firewall, staff, vms
from .views.fallback import not_found

app_name = "api"

router = SimpleRouter()
router.register("plans", catalog.PlanViewSet, basename="plan")
router.register("images", catalog.ImageViewSet, basename="image")
router.register("ssh-keys", account.SSHKeyViewSet, basename="sshkey")
router.register("vms", vms.VMViewSet, basename="vm")
router.register("operations", vms.OperationViewSet, basename="operation")
router.register(r"vms/(?P<vm_uuid>[0-9a-f-]{36})/snapshots", backups.SnapshotViewSet, basename="vm-snapshot")
router.register(r"vms/(?P<vm_uuid>[0-9a-f-]{36})/backups", backups.BackupViewSet, basename="vm-backup")
router.register("admin/backup-stores", backups.BackupStoreViewSet, basename="admin-backup-store")
router.register("admin/backups", backups.StaffBackupViewSet, basename="admin-backup")
router.register("admin/nodes", staff.NodeViewSet, basename="admin-node")
router.register("admin/plans", staff.StaffPlanViewSet, basename="admin-plan")
router.register("admin/images", staff.StaffImageViewSet, basename="admin-image")
router.register("admin/users", staff.UserViewSet, basename="admin-user")
router.register("admin/vms", staff.StaffVMViewSet, basename="admin-vm")

urlpatterns = [
    path("v1/me/", account.MeView.as_view(), name="me"),
    re_path(
        r"^v1/vms/(?P<vm_uuid>[0-9a-f-]{36})/firewall/$", firewall.FirewallView.as_view(), name="vm-firewall"
    ),
    path("v1/", include(router.urls)),
    path("v1/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves its start-up script as a file of its own: no inline script (CSP). Redoc is not
    # offered: it loads its logo from its makers' site and runs a blob: worker, which the CSP refuses.
    path("v1/docs/", SpectacularSwaggerSplitView.as_view(url_name="api:schema"), name="docs"),
    # Anything else under /api/ answers in the API's error body, not with the site's HTML page.
    re_path(r"^[\s\S]*$", not_found, name="not_found"),  # [\s\S]: newlines too
]
