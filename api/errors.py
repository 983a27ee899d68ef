"""One error body for every error the API gives: {"error": {"code", "message", "fields"?}}.

Refusals from the domain (vms.actions.ActionRefused, SuspensionRefused) and
objects still in use become 409 with their message, the same text the pages show.
"""

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db.models import ProtectedError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from accounts.suspension import SuspensionRefused
from images.actions import ImageInUse
from vms.actions import ActionRefused
from vms.draining import DrainRefused

log = logging.getLogger(__name__)


def error_body(code: str, message: str, fields: dict | None = None) -> dict:
    body = {"code": code, "message": message}
    if fields:
        body["fields"] = fields
    return {"error": body}


def handle_exception(exc, context):
    """REST_FRAMEWORK["EXCEPTION_HANDLER"]."""
    if isinstance(exc, ActionRefused | SuspensionRefused | DrainRefused):
        return _conflict("refused", str(exc))
    if isinstance(exc, ImageInUse):
        return _conflict("in_use", str(exc))
    if isinstance(exc, ProtectedError):
        return _conflict("in_use", f"It is still in use ({_protected_by(exc)}); remove those first.")
    exc = _as_api_exception(exc)
    response = drf_exception_handler(exc, context)
    if response is None:  # a bug: say so in the log, and keep the body's shape for the client
        log.exception("API error in %s", context.get("view"), exc_info=exc)
        set_rollback()
        body = error_body("server_error", "Something went wrong on our side; it has been logged.")
        return Response(body, status=status.HTTP_500_INTERNAL_SERVER_ERROR)
    response.data = _body_for(exc)
    return response


def _as_api_exception(exc):
    if isinstance(exc, Http404):
        return exceptions.NotFound("Not found.")
    if isinstance(exc, DjangoPermissionDenied):
        return exceptions.PermissionDenied()
    return exc


def _body_for(exc) -> dict:
    if isinstance(exc, exceptions.ValidationError):
        return _validation_body(exc.detail)
    if isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else exc.default_code
        return error_body(code, str(exc.detail))
    return error_body("error", str(exc))


def _validation_body(detail) -> dict:
    if isinstance(detail, dict):
        fields = {name: errors for name, errors in detail.items() if name != "non_field_errors"}
        general = detail.get("non_field_errors") or []
        message = " ".join(str(error) for error in general) or "Some fields are not valid; see fields."
        return error_body("invalid", message, fields)
    errors = detail if isinstance(detail, list) else [detail]
    return error_body("invalid", " ".join(str(error) for error in errors))


def _conflict(code: str, message: str) -> Response:
    set_rollback()
    return Response(error_body(code, message), status=status.HTTP_409_CONFLICT)


def _protected_by(exc: ProtectedError) -> str:
    objects = list(exc.protected_objects)
    shown = ", ".join(str(obj) for obj in objects[:3])
    return f"{len(objects)}: {shown}{', …' if len(objects) > 3 else ''}"
