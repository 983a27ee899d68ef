import ipaddress

from django.conf import settings
from django.db import models
from django.utils import timezone


class APIToken(models.Model):
    """A personal API token: `kvp_<prefix>_<secret>`, of which only the secret's SHA-256 is kept.

    The prefix is public (it finds the row and names the token in lists); the
    secret is 256 random bits, so a fast hash is enough. Rows are made only by
    api.tokens.create and never deleted by the portal: revoking keeps them, with
    their last use, for the record.
    """

    class Scope(models.TextChoices):
        READ = "read", "Read only"
        WRITE = "write", "Read and write"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField("SHA-256 of the secret", max_length=64)
    scope = models.CharField(max_length=8, choices=Scope.choices, default=Scope.READ)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: it does not expire.")
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    allowed_networks = models.TextField(
        "allowed addresses",
        blank=True,
        help_text="Address ranges (CIDR, space-separated) the token works from; empty: anywhere.",
    )

    class Meta:
        verbose_name = "API token"
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.name} (kvp_{self.prefix}_…)"

    @property
    def allows_writes(self) -> bool:
        return self.scope == self.Scope.WRITE

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def is_usable(self) -> bool:
        return self.revoked_at is None and not self.is_expired

    def networks(self) -> list:
        return [ipaddress.ip_network(text, strict=False) for text in self.allowed_networks.split()]

    def allows_address(self, address: str | None) -> bool:
        """Whether a request from `address` may use the token (its ranges, if it has any)."""
        if not self.allowed_networks:
            return True
        try:
            client = ipaddress.ip_address(address or "")
        except ValueError:
            return False
        return any(client in network for network in self.networks())

    @property
    def owner(self):
        """Whose it is, for the audit log."""
        return self.user
