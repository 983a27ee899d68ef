"""The portal's API token pages: the list (with last use), create (shown once), revoke."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from accounts import reauth

from . import tokens
from .forms import CreateTokenForm

NEW_TOKEN = "kvmpanel_new_api_token"  # noqa: S105 (the session key, not a secret)


def _get_token_for_user(user, token_id):
    """The token if it is this user's own; otherwise 404 (staff too)."""
    return get_object_or_404(tokens.tokens_of(user), pk=token_id)


@require_http_methods(["GET", "POST"])
@login_required
@never_cache  # the page that shows a new token must not be kept by any cache
def token_list(request):
    """The user's tokens, and the form that creates one.

    A new token's clear text waits in the session for the page the POST redirects to, which shows
    it once and forgets it: reloading that page neither shows it again nor makes a second token.
    """
    form = CreateTokenForm(request.POST or None, user=request.user)
    if request.method == "POST" and not reauth.is_recent(request):
        # A token is a way in that needs neither password nor second factor: ask for them first.
        return reauth.ask_again(request)
    if request.method == "POST" and form.is_valid():
        token, clear_text = tokens.create(
            request.user,
            name=form.cleaned_data["name"],
            scope=form.cleaned_data["scope"],
            expires_at=form.expires_at,
            allowed_networks=form.cleaned_data["allowed_networks"],
        )
        request.session[NEW_TOKEN] = {"id": token.pk, "clear_text": clear_text}
        return redirect("api_tokens")
    context = {"form": form, "tokens": tokens.tokens_of(request.user), "created": _new_token(request)}
    return render(request, "api/tokens.html", context)


def _new_token(request) -> dict | None:
    """The token made by the request just before, once; then it is gone from the session."""
    new = request.session.pop(NEW_TOKEN, None)
    if new is None:
        return None
    token = tokens.tokens_of(request.user).filter(pk=new["id"]).first()
    return {"token": token, "clear_text": new["clear_text"]} if token else None


@require_http_methods(["GET", "POST"])
@login_required
def token_revoke(request, token_id):
    """A confirmation page; the token stops working on its POST."""
    token = _get_token_for_user(request.user, token_id)
    if request.method == "POST":
        tokens.revoke(token)
        messages.success(request, f"Revoked the token “{token.name}”: it no longer works.")
        return redirect("api_tokens")
    return render(request, "api/token_revoke.html", {"token": token, "back_url": reverse("api_tokens")})
