"""Asking for the password again before sensitive actions (delete a VM, turn off 2FA, make an API token).

A sign-in or a confirmation counts as recent for KVMPANEL_REAUTH_MINUTES;
after that the action's page sends the user to confirm first and back again.
"""

import functools
import time
from urllib.parse import urlencode

from django.conf import settings
from django.shortcuts import redirect
from django.urls import reverse

CONFIRMED_AT = "kvmpanel_confirmed_at"


def mark(request) -> None:
    """The user has just proven who they are (signed in, or confirmed their password)."""
    request.session[CONFIRMED_AT] = time.time()


def is_recent(request) -> bool:
    confirmed_at = request.session.get(CONFIRMED_AT, 0)
    return time.time() - confirmed_at <= settings.KVMPANEL_REAUTH_MINUTES * 60


def recent_auth_required(view):
    """Run `view` only for a recent confirmation; otherwise confirm first, then come back to this page."""

    @functools.wraps(view)
    def guarded(request, *args, **kwargs):
        if is_recent(request):
            return view(request, *args, **kwargs)
        return ask_again(request)

    return guarded


def ask_again(request):
    """Send the user to confirm who they are, and back to this page afterwards."""
    return redirect(f"{reverse('reauth')}?{urlencode({'next': request.get_full_path()})}")
