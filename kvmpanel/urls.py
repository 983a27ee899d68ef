from django.contrib import admin
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.urls import include, path, reverse
from django.views.generic import RedirectView

from vms import dashboard
from vms.metrics import metrics_view

admin.site.site_header = "kvmpanel backoffice"
admin.site.site_title = "kvmpanel backoffice"
admin.site.enable_nav_sidebar = False  # its 300 px are the lists' (they fit a 1366 px screen without it)


def backoffice_sign_in(request):
    """The backoffice has no sign-in form of its own: the panel's (throttled, two-factor) is the way in.

    A signed-in customer sent here by the backoffice is refused: there is nothing for them.
    """
    if request.user.is_authenticated:
        raise PermissionDenied("The backoffice is for staff.")
    return redirect_to_login(request.GET.get(REDIRECT_FIELD_NAME) or reverse("admin:index"))


admin.site.login = backoffice_sign_in
_admin_index = admin.site.index


def backoffice_index(request, extra_context=None):
    """The backoffice's first page: the dashboard (vms/dashboard.py) above the list of what to manage."""
    return _admin_index(request, {"dashboard": dashboard.summary(), **(extra_context or {})})


admin.site.index = backoffice_index

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="vms:list", permanent=False)),
    path("accounts/tokens/", include("api.page_urls")),
    path("accounts/", include("accounts.urls")),
    path("vms/", include("vms.urls")),
    path("vms/", include("firewall.urls")),
    path("vms/", include("backups.urls")),
    path("nodes/", include("nodes.urls")),
    path("backoffice/dashboard/", admin.site.admin_view(dashboard.dashboard_block), name="dashboard"),
    path("backoffice/", admin.site.urls),
    path("metrics", metrics_view, name="metrics"),
    path("api/", include("api.urls")),
]
