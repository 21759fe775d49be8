"""Prometheus metrics at /metrics, named after vLLM's (``vllm:…`` → ``fimgate:…``).

Per request (recorded when ``api.serving`` settles it): requests by status, model and
workspace; time to first token and end-to-end latency; prompt and generated tokens;
cancellations; rate-limit refusals; how long the ledger write took. A request the client left
is counted under status ``499`` whatever its headers said (a stream cut after its first chunk
had sent a 200), and one that ended before its model was read under model ``none``.

Read when scraped, from the same sources /health reads: the requests in flight (received and
not yet settled), the engines' jobs running (a job outlives a request its client left until
the engine's next step: a batch of the prompt, or a token), prompt tokens sent to llama.cpp
and those it computed (the rest came from its cache: ``1 - computed/sent`` is the hit
ratio). Workspaces are labels by name; keys appear only as their public id, never the key.

Access: with ``FIMGATE_METRICS_TOKEN`` set, /metrics wants ``Authorization: Bearer <token>``;
without it, only clients on this machine (loopback) may read it.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from fimgate.api.errors import ApiError
from fimgate.engines.registry import ModelRegistry
from fimgate.gateway.outcome import Outcome

# The *_created series (a timestamp per label set) only double what a scrape returns.
disable_created_metrics()

# Editors' budgets are 150-375 ms; a cold prompt on a CPU is tens of seconds.
_TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.15, 0.25, 0.375, 0.5, 0.75, 1, 2, 5, 10, 20, 40, 80)
_E2E_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80, 160)
_LEDGER_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5)
# The labels of a request the client left, and of one that ended before it named a model.
CANCELLED_STATUS = "499"
NO_MODEL = "none"


class _EngineCounters(Collector):
    """What each model's engine counted, read at scrape time."""

    def __init__(self, models: Callable[[], ModelRegistry | None]) -> None:
        self._models = models

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        jobs = GaugeMetricFamily(
            "fimgate:engine_jobs_running",
            "Jobs the engine is running (/health's 'active'); one whose client left ends at the "
            "engine's next step.",
            labels=["model"],
        )
        sent = CounterMetricFamily(
            "fimgate:prompt_tokens_sent", "Prompt tokens sent to the engine.", labels=["model"]
        )
        computed = CounterMetricFamily(
            "fimgate:prompt_tokens_computed",
            "Prompt tokens the engine computed (the rest came from its cache).",
            labels=["model"],
        )
        memory = {
            name: CounterMetricFamily(f"fimgate:memory_{name}", text, labels=["model"])
            for name, text in (
                ("prompts", "Prompts given chunks of other files from editor memory."),
                ("chunks", "Chunks editor memory added to prompts."),
                ("tokens", "Prompt tokens editor memory added (not charged to the client)."),
            )
        }
        registry = self._models()
        for model in registry.models if registry else ():
            stats = model.engine.stats()
            jobs.add_metric([model.name], stats.get("active", 0))
            sent.add_metric([model.name], stats.get("prompt_tokens_sent", 0))
            computed.add_metric([model.name], stats.get("prompt_tokens_computed", 0))
            for name, family in memory.items():
                family.add_metric([model.name], stats.get(f"memory_{name}", 0))
        yield jobs
        yield sent
        yield computed
        yield from memory.values()


class Metrics:
    def __init__(
        self, models: Callable[[], ModelRegistry | None], token: str | None,
        in_flight: Callable[[], int] = lambda: 0,
    ) -> None:  # fmt: skip
        self.token = token
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "fimgate:requests", "Completion requests by route (wire) and outcome.",
            ["model", "workspace", "status", "route"], registry=r,
        )  # fmt: skip
        self.ttft = Histogram(
            "fimgate:time_to_first_token_seconds", "Time to the first generated token.",
            ["model"], buckets=_TTFT_BUCKETS, registry=r,
        )  # fmt: skip
        self.e2e = Histogram(
            "fimgate:e2e_request_latency_seconds", "Time from arrival to the recorded end.",
            ["model"], buckets=_E2E_BUCKETS, registry=r,
        )  # fmt: skip
        self.prompt_tokens = Counter(
            "fimgate:prompt_tokens", "Prompt tokens of admitted requests (what usage reports).",
            ["model"], registry=r,
        )  # fmt: skip
        self.generation_tokens = Counter(
            "fimgate:generation_tokens", "Completion tokens generated.", ["model"], registry=r
        )
        self.running = Gauge(
            "fimgate:num_requests_running", "Admitted requests in flight.", ["model"], registry=r
        )
        self.waiting = Gauge(
            "fimgate:num_requests_waiting",
            "Admitted requests still waiting for their first token (a slot, the prompt read).",
            ["model"], registry=r,
        )  # fmt: skip
        self.cancelled = Counter(
            "fimgate:requests_cancelled", "Requests the client abandoned before the end.",
            ["model"], registry=r,
        )  # fmt: skip
        self.refused = Counter(
            "fimgate:rate_limit_refusals", "Requests refused by the rate limiter (429 and 413).",
            ["model", "workspace"], registry=r,
        )  # fmt: skip
        self.ledger_seconds = Histogram(
            "fimgate:ledger_write_seconds", "Time to write a request's usage row and settle it.",
            buckets=_LEDGER_BUCKETS, registry=r,
        )  # fmt: skip
        self._acceptance(r)
        self._outside_requests(r, in_flight)
        r.register(_EngineCounters(models))

    def _outside_requests(self, r: CollectorRegistry, in_flight: Callable[[], int]) -> None:
        """What no request's record counts: refusals before one exists, connections closed
        for their headers, and the requests in flight now."""
        self.key_check_refused = Counter(
            "fimgate:key_check_refusals",
            "Requests refused at the key check (no ledger row): a missing, invalid or ambiguous "
            "key, or service_unavailable when the key store did not answer in time.",
            ["reason"], registry=r,
        )  # fmt: skip
        self.headers_late = Counter(
            "fimgate:connections_headers_late",
            "Connections closed with a 408 because a request's headers did not arrive whole "
            "within FIMGATE_HEADER_READ_S.", registry=r,
        )  # fmt: skip
        self.in_flight = Gauge(
            "fimgate:requests_in_flight",
            "Completion requests received and not yet settled (/health's 'requests_in_flight'; "
            "what a drain waits for).", registry=r,
        )  # fmt: skip
        self.in_flight.set_function(in_flight)

    def _acceptance(self, r: CollectorRegistry) -> None:
        """Inferred acceptance (gateway/acceptance.py), per workspace, key and model."""
        labels = ["workspace", "key", "model"]
        self.judged = Counter(
            "fimgate:completions_judged",
            "Completions judged by the key's next prompt (gateway/acceptance.py).", labels,
            registry=r,
        )  # fmt: skip
        self.accepted = Counter(
            "fimgate:completions_accepted",
            "Judged completions whose text, in full or in part, the next prompt holds.", labels,
            registry=r,
        )  # fmt: skip
        self.shown_chars = Counter(
            "fimgate:judged_chars", "Characters of the judged completions.", labels, registry=r
        )
        self.accepted_chars = Counter(
            "fimgate:accepted_chars", "Characters of judged completions the next prompt holds.",
            labels, registry=r,
        )  # fmt: skip

    def started(self, model: str) -> None:
        """A request was admitted: it runs, and waits for its first token."""
        self.running.labels(model).inc()
        self.waiting.labels(model).inc()

    def first_token(self, model: str) -> None:
        self.waiting.labels(model).dec()

    def record(self, outcome: Outcome, ledger_seconds: float) -> None:
        """Everything of one ended request, from its one record."""
        model = outcome.model or NO_MODEL
        workspace = outcome.principal.workspace
        status = CANCELLED_STATUS if outcome.cancelled else str(outcome.status)
        self.requests.labels(model, workspace, status, outcome.route).inc()
        self.ledger_seconds.observe(ledger_seconds)
        if outcome.cancelled:
            self.cancelled.labels(model).inc()
        if outcome.judged is not None:
            who = (workspace, outcome.principal.key_id, model)
            self.judged.labels(*who).inc()
            self.shown_chars.labels(*who).inc(outcome.judged.shown_chars)
            if outcome.judged.accepted:
                self.accepted.labels(*who).inc()
                self.accepted_chars.labels(*who).inc(outcome.judged.accepted_chars)
        if outcome.status in (413, 429) and outcome.decision is not None:
            self.refused.labels(model, workspace).inc()
        if outcome.admission is None:
            return
        self.running.labels(model).dec()
        if outcome.ttft_s is None:
            self.waiting.labels(model).dec()
        else:
            self.ttft.labels(model).observe(outcome.ttft_s)
        self.e2e.labels(model).observe(outcome.latency_s)
        self.prompt_tokens.labels(model).inc(outcome.prompt_tokens)
        self.generation_tokens.labels(model).inc(outcome.completion_tokens)

    def allowed(self, request: Request) -> None:
        """Raise a 401/403 unless this caller may read the metrics."""
        if self.token:
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip(), self.token):
                raise ApiError(
                    401, "metrics need 'Authorization: Bearer <FIMGATE_METRICS_TOKEN>'",
                    type="authentication_error", code="invalid_metrics_token",
                    headers={"WWW-Authenticate": "Bearer"},
                )  # fmt: skip
            return
        host = request.client.host if request.client else ""
        try:
            local = ipaddress.ip_address(host).is_loopback
        except ValueError:
            local = False
        if not local:
            raise ApiError(
                403, "metrics are served to this machine only; set FIMGATE_METRICS_TOKEN to "
                "read them from elsewhere with 'Authorization: Bearer <token>'",
                type="permission_error", code="metrics_local_only",
            )  # fmt: skip

    def response(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)
