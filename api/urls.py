"""/api/v1/: customer endpoints at the top, staff endpoints under admin/, the schema and its docs."""

from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from .views import account, catalog, staff, vms
from .views.fallback import not_found

app_name = "api"

router = SimpleRouter()
router.register("plans", catalog.PlanViewSet, basename="plan")
router.register("images", catalog.ImageViewSet, basename="image")
router.register("ssh-keys", account.SSHKeyViewSet, basename="sshkey")
router.register("vms", vms.VMViewSet, basename="vm")
router.register("operations", vms.OperationViewSet, basename="operation")
router.register("admin/nodes", staff.NodeViewSet, basename="admin-node")
router.register("admin/plans", staff.StaffPlanViewSet, basename="admin-plan")
router.register("admin/images", staff.StaffImageViewSet, basename="admin-image")
router.register("admin/users", staff.UserViewSet, basename="admin-user")

urlpatterns = [
    path("v1/me/", account.MeView.as_view(), name="me"),
    path("v1/", include(router.urls)),
    path("v1/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("v1/docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    path("v1/redoc/", SpectacularRedocView.as_view(url_name="api:schema"), name="redoc"),
    # Anything else under /api/ answers in the API's error body, not with the site's HTML page.
    re_path(r"^[\s\S]*$", not_found, name="not_found"),  # [\s\S]: newlines too
]
