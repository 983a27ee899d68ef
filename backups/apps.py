from django.apps import AppConfig


class BackupsConfig(AppConfig):
    name = "backups"
    verbose_name = "Backups"

    def ready(self):
        # The restore operation's task; the receiver that refuses a move while a backup reads the disk.
        from . import actions, tasks  # noqa: F401
