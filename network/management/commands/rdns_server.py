"""Run the panel's own PowerDNS server (the Procfile's `dns` process): DNS and its API on loopback.

Its configuration and SQLite database live in KVMPANEL_PDNS_DIR; the API key is the panel's
(KVMPANEL_PDNS_API_KEY, or the key file made beside the secret key); the API port is the one in
KVMPANEL_PDNS_URL. Operators whose DNS runs elsewhere set KVMPANEL_RDNS_ENABLED=0 or point
KVMPANEL_PDNS_URL at their server and do not run this.
"""

import os
import urllib.parse
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from network import pdns


class Command(BaseCommand):
    help = "Run a PowerDNS server on loopback for the panel's reverse zones (foreground)."

    def add_arguments(self, parser):
        parser.add_argument("--write-only", action="store_true", help="Write the files and stop.")

    def handle(self, *args, **options):
        url = urllib.parse.urlsplit(settings.KVMPANEL_PDNS_URL)
        if url.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise CommandError(f"KVMPANEL_PDNS_URL points at {url.hostname}: that server is not ours to run.")
        directory = pdns.write_server_files(
            Path(settings.KVMPANEL_PDNS_DIR),
            dns_port=settings.KVMPANEL_PDNS_DNS_PORT,
            api_port=url.port or 8081,
            api_key=settings.KVMPANEL_PDNS_API_KEY,
        )
        if options["write_only"]:
            self.stdout.write(str(directory))
            return
        command = pdns.server_command(directory)
        os.execv(command[0], command)  # noqa: S606 - our own binary and arguments, no shell
