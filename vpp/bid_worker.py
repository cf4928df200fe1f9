"""The bidding worker pool: a consumer group on ``workflow.tasks`` that runs the pure task functions.

Start one or more with ``vpp bid worker``; Kafka spreads the partitions of ``workflow.tasks``
over the group, so workers run tasks concurrently and each runs one at a time (a long task
holds no connection open but its own consumer's).

Per task: read the input artifacts (``workflow_artifacts``), run the step's function
(:mod:`bidding.tasks`; the submit step goes through the :class:`~bidding.market.Market`
interface, here :class:`vpp.bid_market.StoredMarket`), check the output against what the step
must produce, store it content-addressed, record the step (``workflow_steps``), produce the
WorkflowResult, and only then commit the task's offset. So:

- a worker killed mid-task leaves the offset uncommitted and the group re-delivers the task;
- a re-delivered task whose step record exists is answered from the record, not done again
  (idempotent by (workflow, step, attempt)); one killed after its work but before the record
  does it again, which gives the same artifact (same inputs, same bytes, same sha256) and, for
  a submit, the same curve replacing itself in the market's book;
- an output that fails its check goes to ``telemetry.dlq`` (the result as it would have been,
  with the reason) and the result says the task failed, so the orchestrator retries it;
- market data that is not in yet is asked again until the task's deadline, then the task fails
  (the orchestrator retries until the fetch deadline, then goes on with the last good data);
- while idle it clears started intervals, and a VPP node's cleared energy becomes a dispatch
  request (:mod:`vpp.bid_dispatch`).

``Faults`` exist for the crash tests: delay a step (so a SIGKILL lands mid-task) or corrupt the
first attempt of a step's output.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from confluent_kafka import Consumer, Message, Producer

from bidding.artifacts import Artifact, artifact
from bidding.bids import ENERGY, RESERVE, Bid
from bidding.market import GateClosedError
from bidding.tasks import (
    MarketData,
    MarketDataLateError,
    PriceForecast,
    RunInputs,
    Submission,
    TaskInputError,
    bid_for,
    check_output,
    forecast,
    kind_of,
    market_data,
    safe_bid,
    value_of,
)
from bidding.workflow import FETCH, OPTIMISE, SAFE_BID, SUBMIT
from core import kafka, keys
from core.bid_history import BidStore, artifact_row
from core.config import Settings
from core.history import HistoryStore, connect
from core.rows import WorkflowStepRow
from core.topics import TELEMETRY_DLQ, WORKFLOW_RESULTS, WORKFLOW_TASKS
from schemas import packaged_codec
from schemas.codec import DecodeError
from vpp.bid_dispatch import ClearedDispatcher
from vpp.bid_market import StoredMarket

WORKER_GROUP = "vpp-bid-workers"
CONSUMER = "vpp.bid_worker"
#: Seconds between reads of market data that is not in yet.
FETCH_RETRY_S = 0.5
#: Seconds between clearing rounds of the market while idle.
CLEAR_EVERY_S = 5.0
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Faults:
    """Test hooks: ``delay_s`` per step (sleep before the work), ``corrupt`` steps' first attempts.

    They apply only to runs whose id contains ``scope`` (every run when it is empty).
    """

    delay_s: dict[str, float] = field(default_factory=dict)
    corrupt: frozenset[str] = frozenset()
    scope: str = ""

    def applies(self, workflow_id: str) -> bool:
        """True when the hooks concern this run."""
        return self.scope in workflow_id


@dataclass(frozen=True, slots=True)
class Task:
    """A decoded WorkflowTask."""

    workflow_id: str
    step: str
    attempt: int
    inputs: tuple[str, ...]
    deadline: datetime


class Worker:
    """One member of the worker pool."""

    def __init__(self, settings: Settings, faults: Faults | None = None,
                 name: str | None = None) -> None:
        self.settings = settings
        self.faults = faults or Faults()
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.codec = packaged_codec()
        self.client = connect(settings)
        self.store = BidStore(self.client, settings.clickhouse_database)
        self.history = HistoryStore(self.client, settings.clickhouse_database)
        self.redis = redis.Redis.from_url(settings.redis)
        self.producer = Producer(kafka.client_config(settings, **{"linger.ms": 0}))
        self.done = 0

    def market(self) -> StoredMarket:
        """The market the submit step talks to (the simulated one; a real adapter has the same interface)."""
        dispatcher = ClearedDispatcher(self.settings, self.redis, self.producer, self.store)
        return StoredMarket(self.store, self.history, timedelta(seconds=self.settings.bid_gate_lead_s),
                            on_cleared=dispatcher)

    # ---- one task ---------------------------------------------------------------------------------

    def handle(self, message: Message) -> None:
        """Answer one task message (result produced and flushed before this returns)."""
        self.handle_value(message.key(), message.value() or b"", message)

    def handle_value(self, key: bytes | None, value: bytes, message: Message | None = None) -> None:
        """Answer one WorkflowTask record (what :meth:`handle` does with a message's key and value)."""
        try:
            record = self.codec.decode(value, "WorkflowTask")
        except DecodeError as exc:
            self._dead_letter(key, value, WORKFLOW_TASKS, message, exc.reason.value, exc.message)
            return
        task = Task(record["workflow_id"], record["step"], record["attempt"], tuple(record["inputs"]),
                    record["deadline"])
        recorded = self.store.step(task.workflow_id, task.step, task.attempt)
        if recorded is not None:  # done before (a re-delivered task): answer the same again
            log.info("task %s %s#%d answered from its record", task.workflow_id, task.step, task.attempt)
            self._send(task, recorded.output, recorded.error)
            return
        delay = self.faults.delay_s.get(task.step.split(":")[0], 0.0)
        if delay and self.faults.applies(task.workflow_id):
            time.sleep(delay)
        output, error = self._run(task)
        self.store.put_step(WorkflowStepRow(task.workflow_id, task.step, task.attempt, output, error,
                                            self.name, datetime.now(UTC)))
        self._send(task, output, error)
        self.done += 1

    def _run(self, task: Task) -> tuple[str | None, str | None]:
        """Do the task: (output artifact id, None) or (None, why it failed)."""
        try:
            inputs = self._inputs(task)
            value = self._work(task, inputs)
        except (TaskInputError, GateClosedError, ValueError) as exc:
            return None, f"{type(exc).__name__}: {exc}"
        made = artifact(kind_of(value), value)
        if task.step in self.faults.corrupt and task.attempt == 1 and self.faults.applies(task.workflow_id):
            made = artifact("bid", {"corrupt": True})  # what a broken worker might send
            value = made.value()
        try:
            check_output(task.step, value)
        except ValueError as exc:
            reason = f"result failed its schema: {exc}"
            result = self._result(task, made.artifact_id, None)
            self._dead_letter(task.workflow_id.encode(), result, WORKFLOW_RESULTS, None, "RESULT_SCHEMA",
                              reason)
            return None, reason
        self._store(task, [made])
        if task.step == FETCH:
            assert isinstance(value, MarketData)
            self.redis.set(keys.bid_last_market(value.region), made.artifact_id)
        return made.artifact_id, None

    def _inputs(self, task: Task) -> list[Any]:
        stored = self.store.artifacts(list(task.inputs))
        missing = [i for i in task.inputs if i not in stored]
        if missing:
            raise TaskInputError(f"input artifacts not stored: {', '.join(missing)}")
        return [value_of(stored[i].content) for i in task.inputs]

    def _work(self, task: Task, inputs: list[Any]) -> Any:
        run = next((v for v in inputs if isinstance(v, RunInputs)), None)
        if task.step == FETCH:
            assert run is not None
            return self._fetch(run, task.deadline)
        if task.step.startswith("forecast:"):
            market = next(v for v in inputs if isinstance(v, MarketData))
            assert run is not None
            return forecast(task.step.split(":", 1)[1], market, run)
        if task.step == OPTIMISE:
            forecasts = {v.product: v for v in inputs if isinstance(v, PriceForecast)}
            assert run is not None
            return bid_for(run, forecasts[ENERGY], forecasts.get(RESERVE))
        if task.step == SAFE_BID:
            assert run is not None
            return safe_bid(run)
        if task.step == SUBMIT:
            bid = inputs[0]
            if not isinstance(bid, Bid):
                raise TaskInputError("submit needs a bid")
            assert run is not None
            now = datetime.now(UTC)
            self.market().submit_for(bid, now, run.region, task.workflow_id, task.inputs[0])
            intervals = tuple(c.interval_start for c in bid.intervals)
            return Submission(bid.asset_id, task.inputs[0], intervals, now)
        raise TaskInputError(f"unknown step {task.step!r}")

    def _fetch(self, run: RunInputs, deadline: datetime) -> MarketData:
        """The region's prices before the interval, asked again until the task's deadline if not in yet."""
        first = run.interval_start - timedelta(days=self.settings.bid_history_days)
        while True:
            rows = self.history.market_prices(run.region, first, run.interval_start)
            try:
                return market_data(run, [(r.interval_start, r.price_eur_mwh) for r in rows])
            except MarketDataLateError:
                remaining = (deadline - datetime.now(UTC)).total_seconds()
                if remaining <= 0:  # fail at the deadline, not before: the run then stops waiting for it
                    raise
                time.sleep(min(FETCH_RETRY_S, remaining))

    def _store(self, task: Task, made: list[Artifact]) -> None:
        now = datetime.now(UTC)
        self.store.put_artifacts([artifact_row(a, task.workflow_id, task.step, now) for a in made])

    # ---- Kafka --------------------------------------------------------------------------------------

    def _result(self, task: Task, output: str | None, error: str | None) -> bytes:
        return self.codec.encode("WorkflowResult", {
            "workflow_id": task.workflow_id, "step": task.step, "attempt": task.attempt, "output": output,
            "error": error, "worker": self.name, "event_time": datetime.now(UTC)})

    def _send(self, task: Task, output: str | None, error: str | None) -> None:
        self.producer.produce(WORKFLOW_RESULTS, key=task.workflow_id.encode(),
                              value=self._result(task, output, error))
        if self.producer.flush(30) != 0:
            raise RuntimeError("a workflow result was not delivered within 30 s")

    def _dead_letter(self, key: bytes | None, value: bytes, topic: str, message: Message | None, kind: str,
                     error: str) -> None:
        log.warning("dead-lettered a %s record: %s: %s", topic, kind, error)
        partition = message.partition() if message is not None else None
        offset = message.offset() if message is not None else None
        self.producer.produce(TELEMETRY_DLQ, key=key, value=self.codec.encode("DeadLetter", {
            "original_key": key, "original_value": value, "topic": topic,
            "partition": -1 if partition is None else partition, "offset": -1 if offset is None else offset,
            "original_timestamp": None, "error_kind": kind, "error": error, "consumer": CONSUMER,
            "failed_at": datetime.now(UTC)}))
        self.producer.flush(30)

    # ---- the loop -----------------------------------------------------------------------------------

    def run(self, stop: Callable[[], bool] = lambda: False, clear_market: bool = True) -> None:
        """Take tasks until ``stop()``; commit each task's offset only after its result is produced."""
        consumer = Consumer(kafka.client_config(
            self.settings, **{"group.id": WORKER_GROUP, "enable.auto.commit": False,
                              "auto.offset.reset": "earliest", "session.timeout.ms": 6_000,
                              "heartbeat.interval.ms": 1_000, "fetch.wait.max.ms": 20}))
        consumer.subscribe([WORKFLOW_TASKS])
        last_clear = time.monotonic()
        try:
            while not stop():
                message = consumer.poll(0.2)
                if message is None:
                    if clear_market and time.monotonic() - last_clear >= CLEAR_EVERY_S:
                        last_clear = time.monotonic()
                        self.clear_due()
                    continue
                if message.error() is not None:
                    log.warning("workflow.tasks: %s", message.error())
                    continue
                self.handle(message)
                consumer.commit(message=message, asynchronous=False)
        finally:
            consumer.close()
            self.client.close()

    def clear_due(self) -> int:
        """Clear every started interval with bids and no results yet."""
        try:
            return self.market().clear_due(datetime.now(UTC))
        except Exception:  # clearing is best effort beside the tasks; it is tried again next round
            log.exception("clearing the market failed")
            return 0
