from django.core.management.base import BaseCommand

from nodes.models import Node


class Command(BaseCommand):
    help = "Print the Celery queues a worker should consume: default and one per node."

    def handle(self, *args, **options):
        queues = ["default"] + [node.queue for node in Node.objects.order_by("pk")]
        self.stdout.write(",".join(queues))
