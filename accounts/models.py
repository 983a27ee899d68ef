from django.contrib.auth.models import AbstractUser


class User(AbstractUser):
    """A panel user: a customer, or staff when is_staff is set.

    Our own model from day one, so later fields (quotas, 2FA) need no swap.
    """
