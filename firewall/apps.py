from django.apps import AppConfig


class FirewallConfig(AppConfig):
    name = "firewall"
    verbose_name = "Firewalls"

    def ready(self):
        from . import applying, tasks  # noqa: F401  (the signal's receiver; the operation's task)
