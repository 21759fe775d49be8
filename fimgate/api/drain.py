"""SIGTERM as a drain, not a cut: uvicorn with a drain before its own shutdown.

On SIGTERM the server keeps listening but admits nothing new (503 with ``Retry-After``, and
/ready says not ready, so a load balancer moves on), lets the requests in flight finish for
up to ``drain_seconds``, then shuts down as uvicorn does (every row is written before its
answer's end, so nothing answered is missing from the ledger) and exits 0. SIGINT (Ctrl-C)
stays uvicorn's: stop now, a second one forces.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from types import FrameType

import uvicorn

from fimgate.api.serving import FimServing

log = logging.getLogger("fimgate.drain")


class DrainingServer(uvicorn.Server):
    def __init__(
        self, config: uvicorn.Config, serving: Callable[[], FimServing | None], seconds: float
    ) -> None:
        super().__init__(config)
        self._serving = serving
        self._seconds = seconds
        self._deadline: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM or self.should_exit:
            return super().handle_exit(sig, frame)
        # Not passed to uvicorn, which would raise SIGTERM again once done (exit status 143).
        if self._deadline is None:
            self._deadline = time.monotonic() + self._seconds
            serving = self._serving()
            if serving is not None:
                serving.draining = True

    async def on_tick(self, counter: int) -> bool:
        if self._deadline is not None and not self.should_exit:
            serving = self._serving()
            left = serving.in_flight if serving is not None else 0
            if left == 0 or time.monotonic() >= self._deadline:
                if left:
                    log.warning("drain bound reached with %d request(s) in flight", left)
                else:
                    log.info("drained: no request in flight")
                self.should_exit = True
        return await super().on_tick(counter)
