import signal
import threading

from django.core.management.base import BaseCommand

from nodes import remote
from vms import monitor


class Command(BaseCommand):
    help = "Watch every node's libvirt events; write VM states and push them to browsers."

    def handle(self, *args, **options):
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        remote.write_all_known_hosts()  # the SSH nodes' pinned host keys, on this machine too
        self.stdout.write("node monitor running", ending="\n")
        self.stdout.flush()
        monitor.run(stop)
