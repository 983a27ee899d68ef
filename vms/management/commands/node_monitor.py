import signal
import threading

from django.core.management.base import BaseCommand

from vms import monitor


class Command(BaseCommand):
    help = "Watch every node's libvirt events; write VM states and push them to browsers."

    def handle(self, *args, **options):
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        self.stdout.write("node monitor running", ending="\n")
        self.stdout.flush()
        monitor.run(stop)
