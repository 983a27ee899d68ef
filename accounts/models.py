from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models
from django.utils.crypto import salted_hmac


def _quota_field(label: str):
    return models.PositiveIntegerField(
        label, null=True, blank=True, help_text="Empty: the panel's default (KVMPANEL_QUOTA_* settings)."
    )


class User(AbstractUser):
    """A panel user: a customer, or staff when is_staff is set.

    Our own model from day one, so later fields (quotas, 2FA) need no swap.
    Quota fields override the operator's defaults for this customer.
    """

    max_vms = _quota_field("VM limit")
    max_vcpus = _quota_field("vCPU limit")
    max_memory_mib = _quota_field("memory limit (MiB)")
    max_disk_gb = _quota_field("disk limit (GiB)")

    email_confirmed = models.BooleanField(
        default=True, help_text="Off for a self-service sign-up until the link sent to its address is opened."
    )

    # Suspension (accounts.suspension): the account cannot sign in or use the API
    # (is_active is off too) and its VMs are stopped; they stay, as they are.
    suspended_at = models.DateTimeField(null=True, blank=True)
    suspension_reason = models.CharField(max_length=200, blank=True)

    # Kept by accounts.twofactor with the devices, so no request needs a query to know it.
    two_factor_enabled = models.BooleanField("two-factor sign-in", default=False, editable=False)

    # What every session of the user depends on: accounts.sessions tells the user's open sockets when
    # one of these changes (a new password, two-factor on or off, suspended), so they check theirs.
    SESSION_FIELDS = ("password", "two_factor_enabled", "is_active")

    @property
    def is_suspended(self) -> bool:
        return self.suspended_at is not None

    @classmethod
    def from_db(cls, db, field_names, values):
        user = super().from_db(db, field_names, values)
        user._session_state = user.session_state()
        return user

    def session_state(self) -> tuple:
        return tuple(self.__dict__.get(field) for field in self.SESSION_FIELDS)

    # Django ends every session whose stored hash no longer matches this one. Beyond the
    # password, turning two-factor on or off changes it: sessions opened without the
    # second factor (another browser, before it was turned on) end then too.
    def get_session_auth_hash(self):
        return self._session_hash(settings.SECRET_KEY)

    def get_session_auth_fallback_hash(self):
        for fallback_secret in settings.SECRET_KEY_FALLBACKS:
            yield self._session_hash(fallback_secret)

    def _session_hash(self, secret) -> str:
        state = f"{self.password}:2fa={int(self.two_factor_enabled)}"
        return salted_hmac(
            "kvmpanel.accounts.User.session", state, secret=secret, algorithm="sha256"
        ).hexdigest()


# The key types the panel accepts, with the names people know them by.
SSH_KEY_TYPE_LABELS = {
    "ssh-ed25519": "Ed25519",
    "ecdsa-sha2-nistp256": "ECDSA P-256",
    "ecdsa-sha2-nistp384": "ECDSA P-384",
    "ecdsa-sha2-nistp521": "ECDSA P-521",
    "ssh-rsa": "RSA",
}


class SSHKey(models.Model):
    """An SSH public key a customer keeps in their account, to install on their VMs.

    Rows are made only by accounts.sshkeys (parse_public_key), so public_key is
    always one normalised line and fingerprint is what `ssh-keygen -lf` prints.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="ssh_keys")
    name = models.CharField(max_length=100)
    public_key = models.TextField(help_text="One line: <type> <base64> [comment].")
    fingerprint = models.CharField(max_length=64, help_text="SHA256:<base64>, as ssh-keygen -l prints it.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "SSH key"
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "fingerprint"],
                name="one_ssh_key_per_fingerprint_per_user",
                violation_error_message="You have already added this key.",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.fingerprint})"

    @property
    def key_type(self) -> str:
        return self.public_key.split(" ", 1)[0]

    @property
    def type_label(self) -> str:
        return SSH_KEY_TYPE_LABELS.get(self.key_type, self.key_type)

    @property
    def comment(self) -> str:
        parts = self.public_key.split(" ", 2)
        return parts[2] if len(parts) == 3 else ""


class AuditEntry(models.Model):
    """One change: who, what, which object, when, from which address, and how it ended. Never edited."""

    class Outcome(models.TextChoices):
        REQUESTED = "requested", "Requested"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        REFUSED = "refused", "Refused"

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    actor_name = models.CharField(
        max_length=150, help_text="Kept when the account is gone; 'system' for tasks."
    )
    action = models.CharField(max_length=64, db_index=True, help_text="e.g. vm.create, vm.reboot, sshkey.add")
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=64, blank=True, db_index=True)
    target_label = models.CharField(max_length=200, blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="audit_entries",
        help_text="Whose object it is: they see this entry.",
    )
    address = models.GenericIPAddressField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    detail = models.TextField(blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name_plural = "audit entries"
        indexes = [models.Index(fields=["owner", "-at"], name="audit_by_owner")]

    def __str__(self):
        return (
            f"{self.at:%Y-%m-%d %H:%M} {self.actor_name} {self.action} {self.target_label} ({self.outcome})"
        )
