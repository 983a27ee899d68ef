from django.apps import AppConfig


class ImagesConfig(AppConfig):
    name = "images"
    verbose_name = "Images"

    def ready(self):
        from . import receivers  # noqa: F401  (a node registered or refreshed gets the images it lacks)
