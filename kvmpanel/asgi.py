"""ASGI entry point: HTTP through Django; websockets through Channels (session auth, Origin check)."""

import faulthandler
import os
import signal

from channels.auth import AuthMiddlewareStack
from channels.routing import ProtocolTypeRouter, URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kvmpanel.settings")
# `kill -USR1 <pid>` prints every thread's stack to stderr: how to see what a stuck server waits on.
faulthandler.register(signal.SIGUSR1, all_threads=True)

django_asgi_app = get_asgi_application()

from django.conf import settings  # noqa: E402  (after Django is set up)

from vms.routing import websocket_urlpatterns  # noqa: E402

from .daphne_bodies import leave_form_bodies_to_django  # noqa: E402
from .static_asgi import StaticFilesApp  # noqa: E402

leave_form_bodies_to_django()  # uploads: see kvmpanel/daphne_bodies.py

django_asgi_app = StaticFilesApp(django_asgi_app, from_sources=settings.KVMPANEL_SERVE_STATIC)

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
