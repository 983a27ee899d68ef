from django.apps import AppConfig


class NetworkConfig(AppConfig):
    name = "network"
    verbose_name = "Networking"

    def ready(self):
        from . import receivers  # noqa: F401  (a saved pool gets its reverse zones)
