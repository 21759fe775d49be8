"""Building the gateway from settings, and the first key of a new server.

A new server must be one command and still never open: when the database holds no key at
all, ``serve`` makes a ``default`` workspace and one key, and writes the key to a file only
its owner can read (never to the console or a log, which are often shared).
"""

from __future__ import annotations

import os
from pathlib import Path

from fimgate.gateway.core import Gateway
from fimgate.gateway.keys import KeyStore
from fimgate.gateway.limits import Limits
from fimgate.gateway.ratelimit import MemoryRateLimiter, RateLimiter
from fimgate.settings import GatewaySettings, StoreSettings
from fimgate.store.database import open_database

FIRST_WORKSPACE = "default"


def open_gateway(settings: GatewaySettings, store: StoreSettings) -> Gateway:
    limiter: RateLimiter
    if store.redis_url:
        from fimgate.gateway.ratelimit_redis import RedisRateLimiter

        limiter = RedisRateLimiter(store.redis_url, timeout=store.redis_timeout_s)
    else:
        limiter = MemoryRateLimiter()
    return Gateway(
        open_database(store.database),
        limiter,
        Limits(rpm=settings.default_rpm, tpm=settings.default_tpm),
        settings.reserve_output_tokens,
        store_read_s=store.store_read_s,
        ledger_write_s=store.ledger_write_s,
    )


def ensure_first_key(keys: KeyStore, path: Path) -> bool:
    """Create workspace ``default`` and a key in ``path`` (mode 0600) if no key exists yet.
    Returns whether it did."""
    if keys.count_keys():
        return False
    if FIRST_WORKSPACE not in {name for name, *_ in keys.list_workspaces()}:
        keys.create_workspace(FIRST_WORKSPACE)
    _, key = keys.create_key(FIRST_WORKSPACE, name="first key")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key + "\n")
    return True
