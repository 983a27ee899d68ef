from django.conf import settings
from django.core.management.base import BaseCommand

from vms.consoles.bridge import serve


class Command(BaseCommand):
    help = "Run the VNC console bridge (websockify with one-time tokens)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=settings.KVMPANEL_CONSOLE_BIND)
        parser.add_argument("--port", type=int, default=settings.KVMPANEL_CONSOLE_PORT)

    def handle(self, *args, host: str, port: int, **options):
        self.stdout.write(f"console bridge on {host}:{port}")
        serve(host, port)
