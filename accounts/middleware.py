"""Session rules every request passes: the idle timeout, and two-factor where it is due."""

import time
from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.http import HttpResponse
from django.shortcuts import redirect
from django.urls import reverse

from . import twofactor

LAST_SEEN = "kvmpanel_last_seen"
# Activity is written to the session at most this often: a write per request would cost a query each.
LAST_SEEN_PRECISION = 60


def _is_background(request) -> bool:
    """A refresh an open page makes by itself (htmx live updates; graph data, which static/js/usage.js
    marks with X-Background-Refresh): not the user's activity."""
    return bool(request.headers.get("HX-Request") or request.headers.get("X-Background-Refresh"))


class IdleTimeoutMiddleware:
    """Sign out a browser that has made no request of its own for KVMPANEL_IDLE_MINUTES."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.user.is_authenticated:
            return self.get_response(request)
        now = time.time()
        idle = now - request.session.get(LAST_SEEN, now)
        if idle > settings.KVMPANEL_IDLE_MINUTES * 60:
            return self._sign_out(request)
        if not _is_background(request) and (idle >= LAST_SEEN_PRECISION or LAST_SEEN not in request.session):
            request.session[LAST_SEEN] = now
        return self.get_response(request)

    @staticmethod
    def _sign_out(request):
        logout(request)
        messages.info(request, "You were signed out after a while without activity. Please sign in.")
        if _is_background(request):
            # A redirect would be followed inside the page (the sign-in form swapped into a table):
            # tell the page to go to the sign-in itself, and come back to where it is.
            page = request.headers.get("HX-Current-URL") or request.get_full_path()
            response = HttpResponse(status=401)
            response["HX-Redirect"] = f"{reverse('login')}?{urlencode({'next': urlsplit(page).path})}"
            return response
        return redirect(f"{reverse('login')}?{urlencode({'next': request.get_full_path()})}")


# Pages a signed-in user who still owes two-factor may reach: setting it up, and leaving.
_OPEN_TO_UNVERIFIED = ("two_factor_setup", "logout")


class TwoFactorMiddleware:
    """Staff must set up two-factor before anything else; a session of a 2FA user must have passed it.

    The login view only signs a 2FA user in after the code, so an unverified
    session of such a user (made before 2FA was turned on elsewhere, say) is
    ended here rather than trusted.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = request.user
        if not user.is_authenticated or request.path.startswith(settings.STATIC_URL):
            return self.get_response(request)
        if twofactor.owes_second_factor(user, verified=user.is_verified()):
            if twofactor.is_enabled(user):  # a session that never gave the code: not trusted at all
                logout(request)
                return redirect(f"{reverse('login')}?next={request.get_full_path()}")
            if not self._is_open(request):  # staff without a second factor: set it up first
                return redirect("two_factor_setup")
        return self.get_response(request)

    @staticmethod
    def _is_open(request) -> bool:
        return request.path in {reverse(name) for name in _OPEN_TO_UNVERIFIED}
