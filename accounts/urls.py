from django.contrib.auth import views as auth_views
from django.urls import path

from . import views

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("keys/", views.ssh_keys, name="ssh_keys"),
    path("activity/", views.activity, name="activity"),
    path("keys/<int:key_id>/delete/", views.ssh_key_delete, name="ssh_key_delete"),
]
