"""Where the arena's own outbound calls may go: endpoint members, judges and webhooks.

Public addresses, plus the hosts and networks in ARENA_OUTBOUND_ALLOW; never the ports of the
arena's own Redis, database or web server, which a team's URL must not be able to talk to.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from django.conf import settings

from ensembles.net import OutboundPolicy

REDIS_PORT = 6379
POSTGRES_PORT = 5432


def outbound_policy() -> OutboundPolicy:
    return OutboundPolicy.configured(settings.ARENA_OUTBOUND_ALLOW, services=own_services())


def own_services() -> tuple[tuple[str, int], ...]:
    """(host, port) of every service the arena itself runs on, from the settings that point at them."""
    found: list[tuple[str, int]] = []
    urls = [settings.REDIS_URL, settings.CELERY_BROKER_URL]
    for layer in settings.CHANNEL_LAYERS.values():
        urls += [h for h in layer.get("CONFIG", {}).get("hosts", []) if isinstance(h, str)]
    for url in urls:
        parts = urlsplit(url)
        if parts.hostname and parts.scheme in ("redis", "rediss"):
            found.append((parts.hostname, parts.port or REDIS_PORT))
    for db in settings.DATABASES.values():
        # An empty HOST is a Unix socket: nothing a URL can reach.
        if db.get("HOST") and not str(db["HOST"]).startswith("/"):
            found.append((str(db["HOST"]), int(db.get("PORT") or POSTGRES_PORT)))
    # The web server listens on this machine's loopback (`manage.py up`) or its own address (a container).
    found += [("127.0.0.1", settings.ARENA_WEB_PORT), (socket.gethostname(), settings.ARENA_WEB_PORT)]
    return tuple(dict.fromkeys(found))
