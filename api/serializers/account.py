"""The customer's own account: SSH keys and where they stand against their quota."""

from rest_framework import serializers

from accounts.forms import AddSSHKeyForm
from accounts.models import SSHKey

from .forms import FormValidated


class SSHKeySerializer(serializers.ModelSerializer):
    type = serializers.CharField(source="key_type", read_only=True)

    class Meta:
        model = SSHKey
        fields = ["id", "name", "type", "fingerprint", "public_key", "created_at"]


class AddSSHKeyInput(FormValidated):
    form_class = AddSSHKeyForm

    name = serializers.CharField(
        max_length=100, required=False, allow_blank=True, help_text="Empty: the key's comment."
    )
    public_key = serializers.CharField(
        max_length=16 * 1024, help_text="The one line of your public key file, e.g. ~/.ssh/id_ed25519.pub."
    )


class ResourcesSerializer(serializers.Serializer):
    vms = serializers.IntegerField()
    vcpus = serializers.IntegerField()
    memory_mib = serializers.IntegerField()
    disk_gb = serializers.IntegerField()


class QuotaSerializer(serializers.Serializer):
    limits = ResourcesSerializer(allow_null=True, help_text="Null: no limits (staff).")
    usage = ResourcesSerializer(help_text="Every live VM counts, those still being created too.")


class MeSerializer(serializers.Serializer):
    username = serializers.CharField()
    email = serializers.CharField()
    is_staff = serializers.BooleanField()
    quota = QuotaSerializer()
