import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "playground.settings")
# Initialise Django (apps, settings) before importing anything that touches models.
django.setup(set_prefix=False)

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from playground import netguard, relay, server  # noqa: E402
from playground.origins import SameOriginValidator  # noqa: E402
from playground.routing import websocket_urlpatterns  # noqa: E402

# The websocket backlog bound, and the fast paths PLAYGROUND_FAST_PATHS names
# (playground.server, docs/fast-paths.md); with none, Django's and Channels' own.
server.install()
django_asgi_app = server.asgi_handler()

# Every server process reconciles stale runs on a timer, whether or not it serves a submission.
relay.process.start_keeper()

# The addresses it serves on are this playground's own, which relays may not be (netguard).
application = netguard.remember_listening(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            "websocket": SameOriginValidator(server.websocket_auth_stack(URLRouter(websocket_urlpatterns))),
        }
    )
)
