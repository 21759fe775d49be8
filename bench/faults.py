"""The fault suite (issue 29): the real parts, each fault made for real, and what the clients
and the ledger saw.

    python bench/faults.py [--quick] [--only NAME,...] [--markdown FILE]
    python bench/faults.py --soak SECONDS [--model qwen2.5-coder-1.5b]

The rig: PostgreSQL and Redis (tests/services.py, throwaway folders on loopback), two
``fimgate engine-server`` upstreams of the 0.5B, and ``fimgate serve`` in front of them with
its default deadlines. During each scenario a bounded load (4 clients, short completions,
some streamed) runs before, through and after the fault; then:

- sent, answered (200 with a whole answer), refused by status and code, hung (no answer
  within 60 s), connection errors (the gateway itself killed);
- ledger rows vs answers: every answered request must have its row saying 200, and a row
  must never say 200 for a client that got something else ("lost" and "wrong" rows);
- recovery: seconds from the fault's end until a request is answered and every upstream is
  healthy again, without restarting anything but what the fault stopped.

A scenario fails on a hung request, a lost or wrong row, a 5xx that is not a documented 503
(service_unavailable, usage_not_recorded, engine_error), or no recovery within 60 s; the
exit status is 1 if any failed. ``--quick`` (CI) runs the frozen stores, a frozen upstream
mid-stream, the disconnect storm and slow clients with shorter faults.

``--soak`` replays 4 editors' keystrokes (bench/workloads.py) against ``fimgate serve``
with the model in-process (the default model unless ``--model``), PostgreSQL and Redis, for
SECONDS, sampling the gateway's RSS: it prints the growth after the first 5 minutes (or the
first sixth of a shorter soak), errors, and rows vs answers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fimgate.gateway.keys import KeyStore  # noqa: E402
from fimgate.gateway.limits import LimitBook, Limits  # noqa: E402
from fimgate.local_process import free_port, stop, wait_until_up  # noqa: E402
from fimgate.store.database import Database  # noqa: E402
from tests.services import PostgresServer, RedisServer, frozen  # noqa: E402

FIMGATE = str(Path(sys.executable).parent / "fimgate")
MODEL = "qwen2.5-coder-0.5b"
DATA_DIR = Path(os.environ.get("FIMGATE_TEST_DATA_DIR", ROOT / ".test-data"))
WORK = ROOT / ".faults"
HUNG_S = 60.0
STORM_HUNG_S = 300.0
RECOVERY_S = 60.0
URL = "/v1/fim/completions"
DOCUMENTED_503 = {"service_unavailable", "usage_not_recorded", "engine_error", "draining"}
console = Console(width=240)


# -- the rig -------------------------------------------------------------------------------


@dataclass
class Engine:
    port: int
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, log: Path) -> None:
        command = [
            FIMGATE, "engine-server", "--model", MODEL, "--data-dir", str(DATA_DIR),
            "--port", str(self.port), "--threads", "1", "--parallel", "2", "--n-ctx", "2048",
        ]  # fmt: skip
        with log.open("a") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        wait_until_up(self.process, f"{self.url}/health", log, 300)


@dataclass
class Rig:
    pg: PostgresServer
    redis: RedisServer
    database_url: str
    engines: list[Engine]
    port: int = field(default_factory=free_port)
    gateway: subprocess.Popen | None = None
    key: str = ""
    extra: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, upstreams: int = 2, extra: list[str] | None = None) -> Rig:
        WORK.mkdir(exist_ok=True)
        pg, redis = PostgresServer.start(), RedisServer.start()
        if pg is None or redis is None:
            raise SystemExit("PostgreSQL and redis-server are needed (.ci/run installs them)")
        engines = [Engine(free_port()) for _ in range(upstreams)]
        for i, engine in enumerate(engines):
            engine.start(WORK / f"engine-{i}.log")
        rig = cls(pg, redis, pg.new_database(), engines, extra=extra or [])
        rig.start_gateway()
        return rig

    def start_gateway(self) -> None:
        key_file = WORK / "gateway.key"
        if not self.key:
            key_file.unlink(missing_ok=True)
        upstreams = [arg for e in self.engines for arg in ("--upstream", e.url)]
        model = ["--model", MODEL] if upstreams else []  # in-process: extra names it, or not
        command = [
            FIMGATE, "serve", *model, "--port", str(self.port), "--data-dir", str(DATA_DIR),
            "--database-url", self.database_url, "--redis-url", self.redis.url(),
            "--bootstrap-key-file", str(key_file), *upstreams, *self.extra,
        ]  # fmt: skip
        log = WORK / "gateway.log"
        with log.open("a") as out:
            self.gateway = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        wait_until_up(self.gateway, f"{self.url}/health", log, 600)
        if not self.key:
            self.key = key_file.read_text().strip()

    def workspace_key(self, name: str, rpm: int, tpm: int) -> str:
        database = Database(self.database_url)
        try:
            keys = KeyStore(database)
            keys.create_workspace(name)
            LimitBook(database, Limits(rpm=rpm, tpm=tpm)).set(name, None, rpm, tpm)
            return keys.create_key(name)[1]
        finally:
            database.close()

    def rows(self, request_ids: list[str]) -> dict[str, tuple[int, bool]]:
        with psycopg.connect(self.database_url.replace("+psycopg", "")) as db:
            found = db.execute(
                "SELECT request_id, status, cancelled FROM usage WHERE request_id = ANY(%s)",
                (request_ids,),
            ).fetchall()
        return {r[0]: (r[1], r[2]) for r in found}

    def stop(self) -> None:
        if self.gateway is not None:
            stop(self.gateway)
        for engine in self.engines:
            if engine.process is not None:
                stop(engine.process)
        self.redis.stop()
        self.pg.stop()


# -- what the clients saw ----------------------------------------------------------------------


@dataclass
class Tally:
    sent: int = 0
    answered: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    hung: int = 0
    connection_errors: int = 0
    cancelled: int = 0
    # request id -> the status its client got (503 for a stream that ended with an error)
    got: dict[str, int] = field(default_factory=dict)

    def bad_5xx(self) -> int:
        """5xx answers but the documented 503s (a status is tallied as "STATUS CODE ...")."""

        def bad(what: str) -> bool:
            status, _, code = what.partition(" ")
            documented = status == "503" and code.split(" ")[0] in DOCUMENTED_503
            return status.startswith("5") and not documented

        return sum(n for what, n in self.statuses.items() if bad(what))


def body(i: int, stream: bool, max_tokens: int = 12) -> dict[str, object]:
    name = f"f{i}_{random.randrange(10**6)}"
    return {
        "model": "codestral-latest", "stream": stream, "max_tokens": max_tokens,
        "prompt": f"def {name}(values):\n    \"\"\"Sum of the even values.\"\"\"\n    ",
        "suffix": f"\n\n\nprint({name}([1, 2, 3, 4]))\n",
    }  # fmt: skip


async def request(
    client: httpx.AsyncClient, key: str, payload: dict[str, object], tally: Tally,
    leave_after: float | None = None, hung_s: float = HUNG_S,
) -> None:  # fmt: skip
    """One request; its outcome in ``tally``. ``leave_after``: a stream is left that long
    after its first text (0: at once), as an editor whose user typed on. ``hung_s``: no end
    by then is a hang."""
    tally.sent += 1
    headers = {"Authorization": f"Bearer {key}"}
    try:
        async with asyncio.timeout(hung_s):
            async with client.stream("POST", URL, json=payload, headers=headers) as response:
                rid = response.headers.get("x-request-id", "")
                if response.status_code != 200:
                    await response.aread()
                    code = _code(response)
                    tally.statuses[f"{response.status_code} {code}".strip()] += 1
                    tally.got[rid] = response.status_code
                    return
                if not payload.get("stream"):
                    await response.aread()
                    tally.answered += 1
                    tally.statuses["200"] += 1
                    tally.got[rid] = 200
                    return
                done, failed, first_at = False, False, None
                async for line in response.aiter_lines():
                    if line == "data: [DONE]":
                        done = True
                    elif line.startswith("data: "):
                        choice = (json.loads(line[6:]).get("choices") or [{}])[0]
                        failed = failed or choice.get("finish_reason") == "error"
                        if choice.get("delta", {}).get("content"):
                            first_at = first_at or time.monotonic()
                    if (
                        leave_after is not None and first_at is not None and not done
                        and time.monotonic() - first_at >= leave_after
                    ):  # fmt: skip
                        tally.cancelled += 1
                        tally.got[rid] = 499
                        return
                if failed:  # the documented end of a stream whose engine failed
                    tally.statuses["503 engine_error (stream)"] += 1
                    tally.got[rid] = 503
                elif done:
                    tally.answered += 1
                    tally.statuses["200"] += 1
                    tally.got[rid] = 200
                else:
                    tally.statuses["200 without [DONE]"] += 1
                    tally.got[rid] = -1
    except TimeoutError:
        tally.hung += 1
    except httpx.TransportError:
        tally.connection_errors += 1


def _code(response: httpx.Response) -> str:
    with contextlib.suppress(ValueError, AttributeError):
        found = response.json()
        return str(found.get("code") or found.get("type") or "")
    return ""


async def load(
    rig: Rig, tally: Tally, until: asyncio.Event, clients: int = 4, stream_share: float = 0.5,
    max_tokens: int = 12,
) -> None:  # fmt: skip
    async def client_loop(n: int) -> None:
        async with httpx.AsyncClient(base_url=rig.url, timeout=HUNG_S + 5) as client:
            i = 0
            while not until.is_set():
                i += 1
                stream = random.random() < stream_share
                errors = tally.connection_errors
                await request(client, rig.key, body(n * 10_000 + i, stream, max_tokens), tally)
                # A gateway being restarted is not hammered: a pause after a refused connection.
                await asyncio.sleep(0.5 if tally.connection_errors > errors else 0.05)

    await asyncio.gather(*(client_loop(n) for n in range(clients)))


async def recovered(rig: Rig) -> float | None:
    """Seconds until a request is answered and every upstream is healthy; None: not within
    RECOVERY_S."""
    start = time.monotonic()
    async with httpx.AsyncClient(base_url=rig.url, timeout=10) as client:
        while time.monotonic() - start < RECOVERY_S:
            probe = Tally()
            await request(client, rig.key, body(0, False, 1), probe)
            if probe.answered:
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    health = (await client.get("/health")).json()
                    upstreams = [u for us in health.get("upstreams", {}).values() for u in us]
                    if all(u["healthy"] for u in upstreams):
                        return time.monotonic() - start
            await asyncio.sleep(0.25)
    return None


# -- scenarios -------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    tally: Tally
    recovery_s: float | None
    lost_rows: int = 0
    wrong_rows: int = 0
    rows: int = 0
    note: str = ""

    @property
    def ok(self) -> bool:
        return (
            self.tally.hung == 0 and self.lost_rows == 0 and self.wrong_rows == 0
            and self.tally.bad_5xx() == 0 and self.recovery_s is not None
        )  # fmt: skip


def check_rows(rig: Rig, result: Result) -> None:
    got = {rid: status for rid, status in result.tally.got.items() if rid}
    rows = rig.rows(list(got))
    result.rows = len(rows)
    for rid, status in got.items():
        row = rows.get(rid)
        if status == 200 and (row is None or row[0] != 200):
            result.lost_rows += 1
        elif row is not None and status in (499, -1):
            continue  # the client left: its row says what was sent before it did
        elif row is not None and row[0] != status:
            result.wrong_rows += 1


Fault = Callable[[Rig], Awaitable[str]]


async def under_load(
    rig: Rig, name: str, fault: Fault, *, stream_share: float = 0.5, max_tokens: int = 12
) -> Result:
    tally, until = Tally(), asyncio.Event()
    loader = asyncio.create_task(load(rig, tally, until, stream_share=stream_share,
                                      max_tokens=max_tokens))  # fmt: skip
    await asyncio.sleep(3)
    note = await fault(rig)
    recovery = await recovered(rig)
    await asyncio.sleep(2)
    until.set()
    await loader
    result = Result(name, tally, recovery, note=note)
    check_rows(rig, result)
    return result


def stopped(store: Callable[[Rig], PostgresServer | RedisServer], seconds: float) -> Fault:
    """The server ``store`` gives shut down, and started again ``seconds`` later."""

    async def fault(rig: Rig) -> str:
        server = store(rig)
        await asyncio.to_thread(server.halt)
        await asyncio.sleep(seconds)
        await asyncio.to_thread(server.resume)
        return f"stopped {seconds:g} s, started again"

    return fault


def frozen_for(part: Callable[[Rig], subprocess.Popen | None], seconds: float) -> Fault:
    """The process ``part`` gives (and its children) frozen for ``seconds``."""

    async def fault(rig: Rig) -> str:
        process = part(rig)
        assert process is not None
        with frozen(process):
            await asyncio.sleep(seconds)
        return f"SIGSTOP {seconds:g} s"

    return fault


def first_upstream(rig: Rig) -> subprocess.Popen | None:
    return rig.engines[0].process


def upstream_killed(seconds: float) -> Fault:
    async def fault(rig: Rig) -> str:
        engine = rig.engines[0]
        assert engine.process is not None
        engine.process.send_signal(signal.SIGKILL)
        engine.process.wait()
        await asyncio.sleep(seconds)
        await asyncio.to_thread(engine.start, WORK / "engine-0.log")
        return f"one of 2 upstreams SIGKILL, started again after {seconds:g} s"

    return fault


async def gateway_killed(rig: Rig) -> str:
    assert rig.gateway is not None
    rig.gateway.send_signal(signal.SIGKILL)
    rig.gateway.wait()
    await asyncio.to_thread(rig.start_gateway)
    return "SIGKILL during load, started again"


async def disconnect_storm(rig: Rig, n: int) -> Result:
    """``n`` streams opened at once, each left after its first chunk of text; then the time
    until nothing is in flight (requests or engine jobs, /health). The last of them waits for
    the other prompts to be read (4 slots on 2 cores: about a second each), so a hang here
    is no end in ``STORM_HUNG_S``."""
    tally = Tally()
    async with httpx.AsyncClient(base_url=rig.url, timeout=STORM_HUNG_S + 5) as client:
        await asyncio.gather(*(
            request(client, rig.key, body(i, True, 64), tally, leave_after=0,
                    hung_s=STORM_HUNG_S)
            for i in range(n)
        ))  # fmt: skip
        start = time.monotonic()
        idle = None
        while time.monotonic() - start < RECOVERY_S:
            health = (await client.get("/health")).json()
            jobs = sum(m.get("active", 0) for m in health["models"].values())
            if health["requests_in_flight"] == 0 and jobs == 0:
                idle = time.monotonic() - start
                break
            await asyncio.sleep(0.1)
    result = Result(f"disconnect storm ({n} streams)", tally, idle,
                    note="recovery: until nothing is in flight")  # fmt: skip
    await asyncio.sleep(1)  # the last rows are written as the requests settle
    check_rows(rig, result)
    cancelled_rows = sum(1 for s in rig.rows(list(tally.got)).values() if s[1])
    result.note += f"; {cancelled_rows} rows marked cancelled"
    return result


async def slow_clients(rig: Rig, n: int) -> Result:
    """``n`` connections sending their headers a byte a second, beside the usual load: each
    must be closed (408) within the header deadline, the load answered."""
    tally, until = Tally(), asyncio.Event()
    loader = asyncio.create_task(load(rig, tally, until))
    closed: Counter[str] = Counter()

    async def trickle() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", rig.port)
        writer.write(b"POST /v1/fim/completions HTTP/1.1\r\nHost: x\r\n")

        async def drip() -> None:
            for byte in b"Authorization: Bearer " + rig.key.encode():
                writer.write(bytes([byte]))
                await asyncio.sleep(1)

        dripping = asyncio.create_task(drip())
        try:
            async with asyncio.timeout(HUNG_S):
                answer = await reader.read()
            closed[answer.split(b" ", 2)[1].decode() if answer else "closed"] += 1
        except TimeoutError:
            tally.hung += 1
        finally:
            dripping.cancel()
            writer.close()

    start = time.monotonic()
    await asyncio.gather(*(trickle() for _ in range(n)))
    took = time.monotonic() - start
    until.set()
    await loader
    result = Result(f"slow clients ({n} trickling headers)", tally, 0.0,
                    note=f"trickles: {dict(closed)} after {took:.1f} s")  # fmt: skip
    tally.sent += n
    tally.statuses.update({f"{k} (trickle)": v for k, v in closed.items()})
    check_rows(rig, result)
    return result


async def exact_admission(rig: Rig, n: int, rpm: int) -> Result:
    key = rig.workspace_key(f"admission{random.randrange(10**6)}", rpm=rpm, tpm=10**7)
    tally = Tally()
    async with httpx.AsyncClient(base_url=rig.url, timeout=HUNG_S + 5) as client:
        await asyncio.gather(*(request(client, key, body(i, False, 1), tally) for i in range(n)))
    result = Result(f"exact admission ({n} at once, {rpm}/min)", tally, 0.0,
                    note=f"admitted {tally.answered} of {n}, expected {rpm}")  # fmt: skip
    check_rows(rig, result)
    if tally.answered != rpm:
        result.wrong_rows += abs(tally.answered - rpm)  # fails the scenario
    return result


def scenarios(quick: bool) -> list[tuple[str, Callable[[Rig], Awaitable[Result]]]]:
    d = 6 if quick else 10

    def loaded(name: str, fault: Fault, **kw: object) -> Callable[[Rig], Awaitable[Result]]:
        return lambda rig: under_load(rig, name, fault, **kw)  # type: ignore[arg-type]

    every = [
        ("postgres-stopped", loaded("PostgreSQL stopped", stopped(lambda r: r.pg, d))),
        ("postgres-frozen", loaded("PostgreSQL frozen", frozen_for(lambda r: r.pg.process, d + 5))),
        ("redis-stopped", loaded("Redis stopped", stopped(lambda r: r.redis, d))),
        ("redis-frozen", loaded("Redis frozen", frozen_for(lambda r: r.redis.process, d + 5))),
        ("upstream-frozen", loaded("one of 2 upstreams frozen, short answers",
                                   frozen_for(first_upstream, d + 5))),
        ("upstream-frozen-mid-answer", loaded(
            "one of 2 upstreams frozen mid-answer (64 tokens)", frozen_for(first_upstream, d + 5),
            max_tokens=64)),
        ("upstream-killed", loaded("upstream killed", upstream_killed(3), max_tokens=64)),
        ("disconnect-storm", lambda rig: disconnect_storm(rig, 50)),
        ("slow-clients", lambda rig: slow_clients(rig, 50 if not quick else 20)),
        ("gateway-killed", loaded("gateway SIGKILL", gateway_killed)),
        ("exact-admission", lambda rig: exact_admission(rig, 60, 20)),
    ]  # fmt: skip
    if quick:
        keep = {"postgres-frozen", "redis-frozen", "upstream-frozen-mid-answer",
                "disconnect-storm", "slow-clients"}  # fmt: skip
        return [s for s in every if s[0] in keep]
    return every


COLUMNS = ("scenario", "sent", "answered", "refused (status: n)", "hung", "conn. errors",
           "rows (all)", "lost · wrong rows", "recovery s", "ok", "note")  # fmt: skip


def cells(r: Result) -> list[str]:
    """One scenario's row, for the console's table and the markdown one alike."""
    t = r.tally
    refused = ", ".join(f"{k}: {v}" for k, v in sorted(t.statuses.items()) if k != "200")
    return [
        r.name, str(t.sent), str(t.answered), refused or "-", str(t.hung),
        str(t.connection_errors), str(r.rows), f"{r.lost_rows} · {r.wrong_rows}",
        "-" if r.recovery_s is None else f"{r.recovery_s:.1f}", "yes" if r.ok else "NO", r.note,
    ]  # fmt: skip


def table(results: list[Result]) -> Table:
    out = Table(*COLUMNS, title="Faults under load")
    for r in results:
        out.add_row(*cells(r))
    return out


def markdown(results: list[Result]) -> str:
    rows = [COLUMNS, ("---",) * len(COLUMNS), *map(cells, results)]
    return "".join("| " + " | ".join(row) + " |\n" for row in rows)


# -- the soak --------------------------------------------------------------------------------


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def soak(seconds: float, model: str | None) -> int:
    from workloads import editors

    # Limits far above what 4 typists send (60,000 tokens a minute is ~75 of their prompts):
    # the soak is about memory and errors, not the limiter.
    extra = ["--default-rpm", "1000000", "--default-tpm", "1000000000"]
    rig = await asyncio.to_thread(
        lambda: Rig.start(upstreams=0, extra=extra + (["--model", model] if model else []))
    )
    sessions = editors(4, 400)
    tally, samples = Tally(), []
    start = time.monotonic()
    try:
        assert rig.gateway is not None
        pid = rig.gateway.pid

        async def editor(prompts: list) -> None:
            async with httpx.AsyncClient(base_url=rig.url, timeout=STORM_HUNG_S + 5) as client:
                # The editor opens its file: a cold read of the whole window, 4 at once on 2
                # cores (tens of seconds for the 1.5B), not counted; then it types.
                opened = Tally()
                opening = {"model": "codestral-latest", "prompt": prompts[0].prefix,
                           "suffix": prompts[0].suffix, "max_tokens": 16}  # fmt: skip
                await request(client, rig.key, opening, opened, hung_s=STORM_HUNG_S)
                i = 0
                while time.monotonic() - start < seconds:
                    prompt = prompts[i % len(prompts)]
                    i += 1
                    payload = {
                        "model": "codestral-latest", "prompt": prompt.prefix,
                        "suffix": prompt.suffix, "stream": True, "max_tokens": 16,
                    }  # fmt: skip
                    await typed(client, payload)

        async def typed(client: httpx.AsyncClient, payload: dict) -> None:
            # As bench/serving.py's replay: read the first token, type on 0.2 s later,
            # cancelling the request if it still runs.
            try:
                await asyncio.wait_for(
                    request(client, rig.key, payload, tally, leave_after=0.2), HUNG_S
                )
            except TimeoutError:
                tally.hung += 1

        async def sample() -> None:
            while time.monotonic() - start < seconds:
                samples.append((time.monotonic() - start, rss_mib(pid)))
                await asyncio.sleep(10)

        await asyncio.gather(sample(), *(editor(p) for p in sessions))
        samples.append((time.monotonic() - start, rss_mib(pid)))
        warm = min(300.0, seconds / 6)
        base = next(rss for at, rss in samples if at >= warm)
        peak_after = max(rss for at, rss in samples if at >= warm)
        growth = 100 * (samples[-1][1] - base) / base
        result = Result(f"soak {seconds:g} s", tally, 0.0)
        check_rows(rig, result)
        console.print(
            f"soak: {tally.sent} requests, {tally.answered} answered whole, {tally.cancelled} "
            f"left after the first token, statuses {dict(tally.statuses)}, hung {tally.hung}, "
            f"connection errors {tally.connection_errors}; rows {result.rows} for "
            f"{len(tally.got)} requests, lost {result.lost_rows}, wrong {result.wrong_rows}"
        )
        console.print(
            f"RSS MiB: at {warm:.0f} s {base:.1f}, end {samples[-1][1]:.1f}, highest after "
            f"warm-up {peak_after:.1f}: growth after warm-up {growth:+.2f}%"
        )
        (WORK / "soak.json").write_text(json.dumps({"rss": samples, "growth_pct": growth}))
        ok = result.ok and growth < 5 and tally.bad_5xx() == 0
        return 0 if ok else 1
    finally:
        rig.stop()


# -- main ----------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> int:
    chosen = scenarios(args.quick)
    if args.only:
        names = set(args.only.split(","))
        chosen = [s for s in chosen if s[0] in names]
    rig = await asyncio.to_thread(Rig.start)
    results: list[Result] = []
    try:
        for name, scenario in chosen:
            console.print(f"[bold]{name}[/]")
            result = await scenario(rig)
            results.append(result)
            console.print(table([result]))
    finally:
        rig.stop()
    console.print(table(results))
    if args.markdown:
        Path(args.markdown).write_text(markdown(results))
    return 0 if all(r.ok for r in results) else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI's short version")
    parser.add_argument("--only", help="scenarios, comma-separated")
    parser.add_argument("--markdown", help="write the table here")
    parser.add_argument("--soak", type=float, help="seconds of keystroke replay instead")
    parser.add_argument("--model", help="the soak's model (default: the default model)")
    args = parser.parse_args()
    if args.soak:
        sys.exit(asyncio.run(soak(args.soak, args.model)))
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
