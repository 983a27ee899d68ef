from django.urls import path

from . import consumers

websocket_urlpatterns = [
    path("ws/vms/<uuid:vm_uuid>/serial/", consumers.SerialConsoleConsumer.as_asgi()),
    path("ws/live/", consumers.LiveConsumer.as_asgi()),
]
