"""Who may call what: signed in and active, read-only tokens only read, staff functions for staff."""

from rest_framework import permissions

from .models import APIToken


class IsActiveUser(permissions.IsAuthenticated):
    """Signed in and not suspended (authentication refuses inactive users already: belt and braces)."""

    def has_permission(self, request, view):
        return super().has_permission(request, view) and request.user.is_active


class TokenScopeAllows(permissions.BasePermission):
    """A read-only token may only read: every unsafe method is refused, whatever the endpoint."""

    code = "read_only_token"
    message = "This token is read-only: it cannot make changes. Create a read-and-write token for that."

    def has_permission(self, request, view):
        token = request.auth
        if isinstance(token, APIToken) and not token.allows_writes:
            return request.method in permissions.SAFE_METHODS
        return True


class IsStaff(permissions.BasePermission):
    message = "Only staff may use this endpoint."

    def has_permission(self, request, view):
        return bool(request.user and request.user.is_authenticated and request.user.is_staff)


STAFF = [IsActiveUser, TokenScopeAllows, IsStaff]
