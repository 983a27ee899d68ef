from django.apps import AppConfig


class NodesConfig(AppConfig):
    name = "nodes"
    verbose_name = "Nodes"

    def ready(self):
        from . import remote

        remote.configure()  # where libvirt finds the panel's SSH key and each node's pinned host key
