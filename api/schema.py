"""The OpenAPI schema: the token scheme, and the error body on every operation."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from rest_framework import serializers

# Every operation may answer these (bad input or filters, no or bad credentials, not allowed,
# not found or not yours, too many requests); changes may also be refused (409).
ERRORS_OF_EVERY_OPERATION = ("400", "401", "403", "404", "429")
ERRORS_OF_CHANGES = ("409",)


class ErrorDetail(serializers.Serializer):
    code = serializers.CharField(
        help_text="Stable, e.g. invalid, not_authenticated, read_only_token, refused."
    )
    message = serializers.CharField(help_text="For people; the same text the portal shows.")
    fields = serializers.DictField(
        required=False, help_text="For code 'invalid': the errors of each field, by field name."
    )


class Error(serializers.Serializer):
    error = ErrorDetail()


class PanelAutoSchema(AutoSchema):
    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        codes = ERRORS_OF_EVERY_OPERATION
        if self.method not in ("GET", "HEAD", "OPTIONS"):
            codes += ERRORS_OF_CHANGES
        for code in codes:
            responses.setdefault(code, self._get_response_for_code(Error, code, direction=direction))
        return responses


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "api.authentication.BearerTokenAuthentication"
    name = "token"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A personal API token from the portal (Account → API tokens): kvp_….",
        }
