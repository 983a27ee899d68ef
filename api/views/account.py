"""The caller's own account: who they are, their quota, their SSH keys (their own only, staff too)."""

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import audit
from accounts.sshkeys import keys_of

from .. import quota
from ..serializers.account import AddSSHKeyInput, MeSerializer, SSHKeySerializer
from .base import RateLimitedFirst


@extend_schema(tags=["account"])
class MeView(RateLimitedFirst, APIView):
    @extend_schema(responses={200: MeSerializer})
    def get(self, request):
        """Who the token or session belongs to, and their usage against their limits."""
        user = request.user
        return Response(
            {
                "username": user.username,
                "email": user.email,
                "is_staff": user.is_staff,
                "quota": quota.of(user),
            }
        )


@extend_schema(tags=["account"])
class SSHKeyViewSet(
    RateLimitedFirst,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Public keys to install on new VMs (create, reinstall, rescue take their ids)."""

    serializer_class = SSHKeySerializer
    search_fields = ["name", "fingerprint"]
    ordering_fields = ["name", "created_at"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return keys_of(None)
        return keys_of(self.request.user)

    @extend_schema(request=AddSSHKeyInput, responses={201: SSHKeySerializer})
    def create(self, request):
        """Add a key; the portal's rules apply (supported types, no options, no private key, no duplicate)."""
        given = AddSSHKeyInput(data=request.data, context={"form_kwargs": {"user": request.user}})
        given.is_valid(raise_exception=True)
        key = given.form.save()
        if key is None:  # the same key was added meanwhile; the form says so
            raise serializers.ValidationError({"public_key": given.form.errors["public_key"]})
        audit.record("sshkey.add", key, outcome="succeeded", detail=key.fingerprint)
        return Response(SSHKeySerializer(key).data, status=status.HTTP_201_CREATED)

    def perform_destroy(self, key):
        audit.record("sshkey.delete", key, outcome="succeeded", detail=key.fingerprint)
        key.delete()
