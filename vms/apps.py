from django.apps import AppConfig


class VmsConfig(AppConfig):
    name = "vms"
    verbose_name = "Virtual machines"

    def ready(self):
        # A suspended customer's VMs are stopped; VMs' volumes; pages follow reverse DNS.
        from . import reverse_dns, suspension, volumes  # noqa: F401
