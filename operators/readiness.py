"""Liveness and readiness of a dataflow process: ``/livez`` and ``/readyz`` on a port of their own.

Bytewax's dataflow API answers ``/metrics`` as soon as the process runs, so it
cannot say whether the flow does its work. The parts that do the work report
here instead, into one :data:`FLOW_HEALTH` per process (thread-safe):

* the Kafka source's partitions say each time the worker polls its input
  (:meth:`FlowHealth.polled`) and each time an epoch ends (``epoch_done``).
  The worker polls between steps on the same thread, so a step or a sink that
  blocks stops the polls: polls that keep coming mean work progresses, or there
  is nothing to read;
* the sinks say when a dependency fails and when it answers again
  (``dependency_failing`` / ``dependency_ok``: the Redis sinks, which retry with
  backoff while Redis is away) and time every write (``writing``), so a write
  that hangs on a paused server shows before its socket timeout;
* a thread of the probe server asks the broker for its metadata every few
  seconds (``kafka_checked``), since a paused broker only makes polls come back
  empty.

``/readyz`` is 200 only when all of that is fine, 503 with the reasons
otherwise. ``/livez`` is 503 only when the worker has not polled for
``live_stall_s`` and no dependency explains it (a wedged process a restart
would cure); a worker that waits for Redis is alive, so a dependency's outage
never makes the kubelet restart the flow.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Verdict:
    """One probe's answer: whether it passes and the figures that say why."""

    ok: bool
    detail: dict[str, Any]


class FlowHealth:
    """What the dataflow's parts report about their work, and the probes' verdicts on it."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._last_poll: float | None = None
        self._last_epoch: float | None = None
        self._failing: dict[str, tuple[float, str]] = {}
        self._writes: dict[int, tuple[str, float]] = {}
        self._tokens = itertools.count()
        self._kafka: tuple[bool, str] | None = None

    def polled(self) -> None:
        """The worker polled its input: it is not stuck in a step or a sink."""
        now = self._clock()
        with self._lock:
            self._last_poll = now

    def epoch_done(self) -> None:
        """An epoch ended (its state and offsets were snapshotted)."""
        now = self._clock()
        with self._lock:
            self._last_epoch = now

    def dependency_failing(self, name: str, error: str) -> None:
        """``name`` (redis, clickhouse) failed; the time of the first failure in a row is kept."""
        now = self._clock()
        with self._lock:
            since = self._failing.get(name, (now, error))[0]
            self._failing[name] = (since, error)

    def dependency_ok(self, name: str) -> None:
        """``name`` answered again."""
        with self._lock:
            self._failing.pop(name, None)

    def kafka_checked(self, reachable: bool, detail: str = "") -> None:
        """The result of the latest metadata request to the broker."""
        with self._lock:
            self._kafka = (reachable, detail)

    @contextmanager
    def writing(self, name: str) -> Iterator[None]:
        """Time one write to ``name``: while it lasts longer than the stall limit, the flow is not ready."""
        token = next(self._tokens)
        with self._lock:
            self._writes[token] = (name, self._clock())
        try:
            yield
        finally:
            with self._lock:
                del self._writes[token]

    def ready(self, stall_s: float) -> Verdict:
        """Ready: the broker answers, no dependency fails or hangs, the worker polled within ``stall_s``."""
        now = self._clock()
        with self._lock:
            last_poll, last_epoch, kafka = self._last_poll, self._last_epoch, self._kafka
            failing = dict(self._failing)
            writes = list(self._writes.values())
        problems = []
        if kafka is None:
            problems.append("kafka not checked yet")
        elif not kafka[0]:
            problems.append(f"kafka unreachable ({kafka[1]})")
        for name, (since, error) in sorted(failing.items()):
            problems.append(f"{name} failing for {now - since:.0f} s ({error})")
        for name, start in writes:
            if now - start > stall_s:
                problems.append(f"a {name} write hangs for {now - start:.0f} s")
        if last_poll is None:
            problems.append("input not polled yet")
        elif now - last_poll > stall_s:
            problems.append(f"input not polled for {now - last_poll:.0f} s")
        return Verdict(not problems, {
            "status": "; ".join(problems) or "ok",
            "last_poll_age_s": _age(now, last_poll),
            "last_epoch_age_s": _age(now, last_epoch),
            "failing": sorted(failing),
        })

    def live(self, live_stall_s: float) -> Verdict:
        """Alive unless the worker has not polled for ``live_stall_s`` with no dependency to blame."""
        now = self._clock()
        with self._lock:
            last = self._last_poll if self._last_poll is not None else self._started
            waiting = sorted({*self._failing, *(name for name, _ in self._writes.values())})
        stuck = now - last > live_stall_s and not waiting
        status = f"input not polled for {now - last:.0f} s, no dependency to blame" if stuck else "alive"
        return Verdict(not stuck, {"status": status, "last_poll_age_s": round(now - last, 1),
                                   "waiting_on": waiting})


def _age(now: float, then: float | None) -> float | None:
    return None if then is None else round(now - then, 1)


#: The health of this process's dataflow (a process runs one flow).
FLOW_HEALTH = FlowHealth()


class ProbeServer:
    """``/livez`` and ``/readyz`` over HTTP on threads of their own, and the broker check."""

    def __init__(self, health: FlowHealth, host: str, port: int, stall_s: float, live_stall_s: float,
                 kafka_check: Callable[[], None], check_every_s: float = 2.0) -> None:
        self.health = health
        self._stall_s = stall_s
        self._live_stall_s = live_stall_s
        self._kafka_check = kafka_check
        self._every_s = check_every_s
        self._stop = threading.Event()
        self._http = ThreadingHTTPServer((host, port), self._handler())
        self._http.daemon_threads = True

    @property
    def port(self) -> int:
        """The port actually bound."""
        return int(self._http.server_address[1])

    def start(self) -> ProbeServer:
        threading.Thread(target=self._http.serve_forever, name="probes-http", daemon=True).start()
        threading.Thread(target=self._check_kafka, name="probes-kafka", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._http.shutdown()
        self._http.server_close()

    def _check_kafka(self) -> None:
        while not self._stop.is_set():
            try:
                self._kafka_check()
            except Exception as exc:
                self.health.kafka_checked(False, str(exc) or type(exc).__name__)
            else:
                self.health.kafka_checked(True)
            self._stop.wait(self._every_s)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/livez":
                    verdict = server.health.live(server._live_stall_s)
                elif path in ("/readyz", "/healthz"):
                    verdict = server.health.ready(server._stall_s)
                else:
                    self.send_error(404, "try /livez or /readyz")
                    return
                body = json.dumps(verdict.detail).encode()
                self.send_response(200 if verdict.ok else 503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Probes every few seconds are not worth a log line each."""

        return Handler


def serve_probes(host: str, port: int, stall_s: float, live_stall_s: float,
                 kafka_check: Callable[[], None], health: FlowHealth = FLOW_HEALTH) -> ProbeServer | None:
    """Start the probes of this process's flow; a port in use loses the probes, not the flow (logged).

    ``port`` 0 turns them off. ``kafka_check`` raises when the broker does not answer.
    """
    if port == 0:
        return None
    try:
        server = ProbeServer(health, host, port, stall_s, live_stall_s, kafka_check)
    except OSError as exc:
        log.warning("cannot serve the dataflow's probes on %s:%d (%s): running without them", host, port, exc)
        return None
    log.info("dataflow probes on http://%s:%d/readyz and /livez", host, server.port)
    return server.start()
