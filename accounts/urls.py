from django.contrib.auth import views as auth_views
from django.urls import path

from . import views

_reset_done = auth_views.PasswordResetDoneView.as_view(template_name="registration/password_reset_done.html")
_reset_complete = auth_views.PasswordResetCompleteView.as_view(
    template_name="registration/password_reset_complete.html"
)

urlpatterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    path("login/verify/", views.login_verify, name="login_verify"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("signup/", views.signup, name="signup"),
    path("signup/resend/", views.resend_confirmation, name="resend_confirmation"),
    path("email/confirm/<str:token>/", views.confirm_email, name="confirm_email"),
    path("profile/", views.profile, name="profile"),
    path("confirm/", views.confirm_password, name="reauth"),
    path("password/", views.PasswordChangeView.as_view(), name="password_change"),
    path(
        "password/reset/",
        auth_views.PasswordResetView.as_view(
            template_name="registration/password_reset_form.html",
            email_template_name="registration/password_reset_email.txt",
            subject_template_name="registration/password_reset_subject.txt",
        ),
        name="password_reset",
    ),
    path("password/reset/sent/", _reset_done, name="password_reset_done"),
    path(
        "password/reset/<uidb64>/<token>/",
        views.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path("password/reset/done/", _reset_complete, name="password_reset_complete"),
    path("2fa/setup/", views.two_factor_setup, name="two_factor_setup"),
    path("2fa/disable/", views.two_factor_disable, name="two_factor_disable"),
    path("2fa/recovery-codes/", views.recovery_codes_new, name="recovery_codes_new"),
    path("keys/", views.ssh_keys, name="ssh_keys"),
    path("activity/", views.activity, name="activity"),
    path("keys/<int:key_id>/delete/", views.ssh_key_delete, name="ssh_key_delete"),
]
