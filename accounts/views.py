"""Account pages: signing in (with two-factor), sign-up, the account page, SSH keys, activity."""

import time
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth import login as auth_login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST
from django_otp import login as otp_login
from django_otp.plugins.otp_totp.models import TOTPDevice

from . import audit, emails, reauth, twofactor
from .activity import lines_for
from .forms import AddSSHKeyForm, CodeForm, ConfirmPasswordForm, LoginForm, ProfileForm, SignUpForm
from .models import AuditEntry, SSHKey
from .reauth import recent_auth_required
from .sshkeys import keys_of


def _get_key_for_user(user, key_id) -> SSHKey:
    """The key if it is this user's own; otherwise 404, exactly as if it did not exist (staff too)."""
    return get_object_or_404(keys_of(user), pk=key_id)


@require_http_methods(["GET", "POST"])
@login_required
def ssh_keys(request):
    """The user's keys, and the form that adds one."""
    form = AddSSHKeyForm(request.POST or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        key = form.save()
        audit.record("sshkey.add", key, outcome="succeeded", detail=key.fingerprint)
        if key is not None:
            messages.success(request, f"Added the key “{key.name}” ({key.fingerprint}).")
            return redirect("ssh_keys")
    return render(request, "accounts/ssh_keys.html", {"form": form, "keys": keys_of(request.user)})


@require_http_methods(["GET", "POST"])
@login_required
def ssh_key_delete(request, key_id):
    """A confirmation page; the key goes on its POST."""
    key = _get_key_for_user(request.user, key_id)
    if request.method == "POST":
        audit.record("sshkey.delete", key, outcome="succeeded", detail=key.fingerprint)
        key.delete()
        messages.success(request, f"Deleted the key “{key.name}”.")
        return redirect("ssh_keys")
    return render(request, "accounts/ssh_key_delete.html", {"key": key, "back_url": reverse("ssh_keys")})


@login_required
def activity(request):
    """The audit log of the user's own account and objects, newest first."""
    entries = AuditEntry.objects.filter(owner=request.user)
    page = Paginator(entries, 50).get_page(request.GET.get("page"))
    return render(request, "accounts/activity.html", {"page": page, "lines": lines_for(page, request.user)})


# Signing in, with the second factor as a step of its own --------------------------------------

PENDING_2FA = "kvmpanel_pending_2fa"
PENDING_2FA_SECONDS = 300
PENDING_2FA_TRIES = 5


class LoginView(auth_views.LoginView):
    """Password first; a user with two-factor is signed in only after the code (login_verify).

    Until then the session holds no user at all, so no other URL can be reached
    by skipping the second step.
    """

    form_class = LoginForm
    redirect_authenticated_user = True

    def form_valid(self, form):
        user = form.get_user()
        if twofactor.is_enabled(user):
            self.request.session[PENDING_2FA] = {
                "user": user.pk,
                "backend": user.backend,
                "at": time.time(),
                "tries": 0,
                "next": self.get_redirect_url(),
            }
            return redirect("login_verify")
        response = super().form_valid(form)
        reauth.mark(self.request)
        return response

    def get_initial(self):
        # The confirmation link sends here with the account's name filled in (confirm_email).
        return {**super().get_initial(), "username": self.request.GET.get("username", "")[:150]}

    def get_context_data(self, **kwargs):
        return {**super().get_context_data(**kwargs), "signup_open": settings.KVMPANEL_SIGNUP_OPEN}


@require_http_methods(["GET", "POST"])
def login_verify(request):
    pending = request.session.get(PENDING_2FA)
    user = _pending_user(pending)
    if user is None:
        request.session.pop(PENDING_2FA, None)
        messages.info(request, "Please sign in again.")
        return redirect("login")
    form = CodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        device = twofactor.verify(user, form.cleaned_data["code"])
        if device is not None:
            return _finish_login(request, user, device, pending)
        pending["tries"] += 1
        request.session[PENDING_2FA] = pending
        audit.record(
            "account.login", user, outcome="refused", owner=user, actor=None, detail="wrong 2FA code"
        )
        if pending["tries"] >= PENDING_2FA_TRIES:
            request.session.pop(PENDING_2FA)
            messages.error(request, "Too many wrong codes. Please sign in again.")
            return redirect("login")
        form.add_error("code", "That code is not right, or it was used already.")
    return render(request, "registration/login_verify.html", {"form": form})


def _pending_user(pending):
    if not pending or time.time() - pending["at"] > PENDING_2FA_SECONDS:
        return None
    return get_user_model().objects.filter(pk=pending["user"], is_active=True).first()


def _finish_login(request, user, device, pending):
    request.session.pop(PENDING_2FA)
    auth_login(request, user, backend=pending["backend"])  # a new session key, as at every sign-in
    otp_login(request, device)
    reauth.mark(request)
    if not isinstance(device, TOTPDevice):
        left = twofactor.recovery_codes_left(user)
        messages.warning(
            request, f"You signed in with a recovery code; {left} left. Make new ones if few remain."
        )
    next_url = pending.get("next")
    if next_url and url_has_allowed_host_and_scheme(next_url, {request.get_host()}, request.is_secure()):
        return redirect(next_url)
    return redirect(settings.LOGIN_REDIRECT_URL)


# Sign-up and email addresses ------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def signup(request):
    if not settings.KVMPANEL_SIGNUP_OPEN:
        raise Http404("Sign-up is closed.")
    if request.user.is_authenticated:
        return redirect(settings.LOGIN_REDIRECT_URL)
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if not _signup_allowed_from(audit.client_address(request)):
            form.add_error(None, "Too many new accounts from your address. Please try again in an hour.")
            return render(request, "registration/signup.html", {"form": form}, status=429)
        user = form.save()
        audit.record("account.signup", user, outcome="succeeded", owner=user, actor=user)
        emails.send_confirmation(request, user, user.email)
        return render(request, "registration/signup_done.html", {"email": user.email})
    return render(request, "registration/signup.html", {"form": form})


def _signup_allowed_from(address: str | None) -> bool:
    """At most KVMPANEL_SIGNUPS_PER_HOUR new accounts per address an hour (counted in the shared cache)."""
    key = f"signups:{address}"
    cache.add(key, 0, timeout=3600)  # the hour starts with the first sign-up
    return cache.incr(key) <= settings.KVMPANEL_SIGNUPS_PER_HOUR


@require_http_methods(["GET"])
def confirm_email(request, token):
    try:
        user = emails.confirm(token)
    except emails.BadLink as bad:
        messages.error(request, str(bad))
        return redirect("profile" if request.user.is_authenticated else "login")
    audit.record(
        "account.email_confirm", user, outcome="succeeded", owner=user, actor=user, detail=user.email
    )
    if request.user.is_authenticated:
        messages.success(request, f"Your address {user.email} is confirmed.")
        return redirect("profile")
    # The link proves the mailbox, not the password: the account is ready, and its owner signs in.
    messages.success(request, f"Your address {user.email} is confirmed. Sign in below to start.")
    return redirect(f"{reverse('login')}?{urlencode({'username': user.get_username()})}")


@require_POST
def resend_confirmation(request):
    """Send the sign-up link again; the answer is the same whether or not such an account exists."""
    username = request.POST.get("username", "")
    user = get_user_model().objects.filter(username=username, email_confirmed=False, is_active=True).first()
    # One mail per account per minute, whoever asks.
    if user is not None and cache.add(f"resend-confirmation:{user.pk}", 1, timeout=60):
        emails.send_confirmation(request, user, user.email)
    messages.info(
        request, "If that account waits for its address to be confirmed, we have sent the link again."
    )
    return redirect("login")


# The account page -----------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@login_required
def profile(request):
    old_email = request.user.email
    form = ProfileForm(request.POST or None, instance=request.user)
    if request.method == "POST" and form.is_valid():
        user = form.save(commit=False)
        new_email, user.email = user.email, old_email  # a new address waits for its link
        user.save(update_fields=["first_name", "last_name"])
        if new_email.lower() != old_email.lower() and new_email:
            emails.send_confirmation(request, user, new_email)
            messages.info(request, f"We sent a link to {new_email}. Your address changes when you open it.")
        audit.record("account.profile", user, outcome="succeeded", owner=user)
        messages.success(request, "Saved.")
        return redirect("profile")
    context = {
        "form": form,
        "two_factor": twofactor.is_enabled(request.user),
        "recovery_codes_left": twofactor.recovery_codes_left(request.user),
    }
    return render(request, "accounts/profile.html", context)


# Two-factor ----------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@login_required
def two_factor_setup(request):
    if twofactor.is_enabled(request.user):
        return redirect("profile")
    device = twofactor.pending_device(request.user)
    form = CodeForm(request.POST or None)
    form.fields["code"].help_text = "The 6 digits the app shows after adding the account."
    if request.method == "POST" and form.is_valid():
        codes = twofactor.confirm(request, device, form.cleaned_data["code"])
        if codes is not None:
            reauth.mark(request)
            return render(request, "accounts/recovery_codes.html", {"codes": codes, "first_time": True})
        form.add_error(
            "code", "That code is not right. Check the time on your phone, and try the newest code."
        )
    context = {
        "form": form,
        "qr_code": twofactor.qr_code_svg(device),
        "secret": twofactor.secret_text(device),
    }
    return render(request, "accounts/two_factor_setup.html", context)


@require_http_methods(["GET", "POST"])
@login_required
@recent_auth_required
def recovery_codes_new(request):
    if not twofactor.is_enabled(request.user):
        return redirect("profile")
    if request.method == "POST":
        codes = twofactor.new_recovery_codes(request.user)
        audit.record("account.2fa_recovery_codes", request.user, outcome="succeeded", owner=request.user)
        return render(request, "accounts/recovery_codes.html", {"codes": codes})
    return render(request, "accounts/recovery_codes_new.html")


@require_http_methods(["GET", "POST"])
@login_required
@recent_auth_required
def two_factor_disable(request):
    if request.user.is_staff and settings.KVMPANEL_STAFF_2FA_REQUIRED:
        messages.error(request, "Staff accounts must keep two-factor sign-in.")
        return redirect("profile")
    if request.method == "POST":
        twofactor.disable(request)
        messages.success(request, "Two-factor sign-in is off.")
        return redirect("profile")
    return render(request, "accounts/two_factor_disable.html")


# Confirming the password before a sensitive action --------------------------------------------


@require_http_methods(["GET", "POST"])
@login_required
def confirm_password(request):
    needs_code = twofactor.is_enabled(request.user)
    form = ConfirmPasswordForm(request.POST or None, request=request, needs_code=needs_code)
    next_url = request.POST.get("next") or request.GET.get("next") or ""
    if request.method == "POST" and form.is_valid():
        if needs_code and twofactor.verify(request.user, form.cleaned_data["code"]) is None:
            form.add_error("code", "That code is not right, or it was used already.")
        else:
            reauth.mark(request)
            safe = url_has_allowed_host_and_scheme(next_url, {request.get_host()}, request.is_secure())
            return redirect(next_url if safe and next_url else "profile")
    return render(request, "accounts/confirm_password.html", {"form": form, "next": next_url})


# Passwords: Django's views, audited ------------------------------------------------------------


class PasswordChangeView(auth_views.PasswordChangeView):
    template_name = "registration/password_change.html"

    def form_valid(self, form):
        response = super().form_valid(form)
        audit.record(
            "account.password_change", self.request.user, outcome="succeeded", owner=self.request.user
        )
        messages.success(self.request, "Your password is changed.")
        return response

    def get_success_url(self):
        return reverse("profile")


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    template_name = "registration/password_reset_confirm.html"

    def form_valid(self, form):
        user = form.user
        response = super().form_valid(form)
        # The link reached the user's mailbox, which is what confirming the address proves.
        user.email_confirmed = True
        user.save(update_fields=["email_confirmed"])
        audit.record("account.password_reset", user, outcome="succeeded", owner=user, actor=user)
        return response
