"""`Authorization: Bearer kvp_…` for API clients (session cookies, with CSRF, serve the docs page)."""

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from accounts.audit import client_address

from . import tokens
from .throttling import FailedTokenRate


class BearerTokenAuthentication(BaseAuthentication):
    keyword = b"bearer"

    def authenticate(self, request):
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword:
            return None  # not ours: the session may still authenticate the request
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("Send one token after Bearer.")
        try:
            presented = parts[1].decode("ascii")
        except UnicodeDecodeError:
            FailedTokenRate().count(request)
            raise exceptions.AuthenticationFailed("The token is unknown, expired or revoked.") from None
        token = tokens.find(presented)
        if token is None:
            FailedTokenRate().count(request)
            raise exceptions.AuthenticationFailed("The token is unknown, expired or revoked.")
        refused = tokens.refusal(token, client_address(request))
        if refused:
            raise exceptions.AuthenticationFailed(refused)
        tokens.note_use(token)
        return token.user, token

    def authenticate_header(self, request):
        # Makes DRF answer 401 (not 403) to a request without credentials.
        return 'Bearer realm="api"'
