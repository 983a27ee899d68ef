"""A pool's reverse zones are made when the pool is (and again when it changes)."""

from django.db.models.signals import post_save
from django.dispatch import receiver

from . import rdns
from .models import Pool


@receiver(post_save, sender=Pool, dispatch_uid="network.pool_reverse_zones")
def make_reverse_zones(sender, instance: Pool, **kwargs) -> None:
    rdns.request_zones(instance)
