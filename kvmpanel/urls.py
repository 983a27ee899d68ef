from django.contrib import admin
from django.contrib.auth.decorators import login_required
from django.urls import include, path
from django.views.generic import RedirectView

from vms.metrics import metrics_view

admin.site.site_header = "kvmpanel backoffice"
admin.site.site_title = "kvmpanel backoffice"
# One way in: the panel's sign-in (throttled, with two-factor), never the admin's own form.
admin.site.login = login_required(admin.site.login)

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="vms:list", permanent=False)),
    path("accounts/tokens/", include("api.page_urls")),
    path("accounts/", include("accounts.urls")),
    path("vms/", include("vms.urls")),
    path("backoffice/", admin.site.urls),
    path("metrics", metrics_view, name="metrics"),
    path("api/", include("api.urls")),
]
