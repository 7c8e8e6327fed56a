import gc
import os
import sys

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "playground.settings")
# Initialise Django (apps, settings) before importing anything that touches models;
# then what django.core.asgi.get_asgi_application() returns, with fewer thread trips.
django.setup(set_prefix=False)

from playground.middleware import ASGIHandler, websocket_auth_stack  # noqa: E402

django_asgi_app = ASGIHandler()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from playground import eager_write, netguard, relay, ws_frames  # noqa: E402
from playground.origins import SameOriginValidator  # noqa: E402
from playground.routing import websocket_urlpatterns  # noqa: E402

# The server process's I/O: see playground/eager_write.py, ws_frames.py and settings.GIL_SWITCH_MS.
eager_write.install()
ws_frames.install()
if settings.GIL_SWITCH_MS > 0:  # 0: Python's default
    sys.setswitchinterval(settings.GIL_SWITCH_MS / 1000)

# Every server process reconciles stale runs on a timer, whether or not it serves a submission.
relay.process.start_keeper()

# The addresses it serves on are this playground's own, which relays may not be (netguard).
application = netguard.remember_listening(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            "websocket": SameOriginValidator(websocket_auth_stack(URLRouter(websocket_urlpatterns))),
        }
    )
)

# The ~94,000 objects of the loaded code (Django, Twisted, the apps) live as long as the
# process: move them out of the cyclic garbage collector's sight. A full collection
# walked them all, stopping every thread for 43-89 ms under load (20 ms after this).
gc.collect()
gc.freeze()
