"""The Autobidder on the real local stack: the orchestrator dataflow and workers as real processes.

Shared by the crash tests (``tests/integration/test_bidding_workflow.py``) and the workflow
figures of ``vpp bench bidding``: start the orchestrator (``dataflows.bidding`` with a recovery
store) and workers (``vpp bid worker``), publish a region's real prices (the SMARD series the
local market feed replays), ask for runs, read their journal back, kill and restart processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis
from confluent_kafka import Producer

from bidding import journal
from bidding.tasks import RunInputs
from bidding.workflow import FINAL, Workflow
from core import kafka
from core.bid_history import BidStore
from core.config import Settings
from core.history import HistoryStore, connect
from core.waiting import wait_until
from vpp.bid_runs import Requested, next_interval, read_journal, request_run
from vpp.dataflows import dataflow_argv, ensure_recovery, settings_env
from vpp.market_feed import MarketFeed

STEP = timedelta(hours=1)


@dataclass
class BidStack:
    """The orchestrator and a worker pool over one running local stack."""

    settings: Settings
    workdir: Path
    orchestrator: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    orchestrator_starts: int = 0

    def __post_init__(self) -> None:
        self.client = connect(self.settings)
        self.store = BidStore(self.client, self.settings.clickhouse_database)
        self.history = HistoryStore(self.client, self.settings.clickhouse_database)
        self.redis = redis.Redis.from_url(self.settings.redis)
        self.producer = Producer(kafka.client_config(self.settings, **{"linger.ms": 0}))
        self.recovery = self.workdir / "recovery-bidding"
        self.env = {**os.environ, **settings_env(self.settings)}

    def _log(self, name: str) -> int:
        return os.open(self.workdir / f"{name}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def start_orchestrator(self) -> None:
        """Start (or restart, on its recovery store) the orchestrator dataflow."""
        ensure_recovery(self.recovery)
        out = self._log("orchestrator")
        self.orchestrator = subprocess.Popen(dataflow_argv("bidding", self.settings, recovery=self.recovery),
                                             env=self.env, stdout=out, stderr=subprocess.STDOUT)
        os.close(out)
        self.orchestrator_starts += 1

    def start_worker(self, *args: str) -> subprocess.Popen[bytes]:
        """Start one more worker (``args``: test hooks such as ``--delay optimise=3``)."""
        out = self._log(f"worker-{len(self.workers)}")
        worker = subprocess.Popen([sys.executable, "-m", "vpp", "bid", "worker", *args], env=self.env,
                                  stdout=out, stderr=subprocess.STDOUT)
        os.close(out)
        self.workers.append(worker)
        return worker

    def wait_for_snapshots(self, timeout_s: float = 60.0) -> None:
        """Wait until the orchestrator's recovery store has been written twice from now on.

        What the orchestrator has already done is then in a snapshot: the first write may still be
        the epoch before (Bytewax commits an epoch's snapshots while the next epoch runs), the
        second is of an epoch that began after the call. A fixed sleep assumed this on a busy machine.
        """
        writes: list[float] = [time.time()]

        def written_again() -> bool:
            latest = max((f.stat().st_mtime for f in self.recovery.iterdir()), default=0.0)
            if latest > writes[-1]:
                writes.append(latest)
            return len(writes) > 2

        if not wait_until(written_again, timeout_s):
            raise TimeoutError(f"the orchestrator wrote no snapshot in {timeout_s:.0f} s ({self.recovery})")

    def kill_orchestrator(self) -> None:
        """SIGKILL the orchestrator (no goodbye: whatever it had not snapshotted is redone)."""
        assert self.orchestrator is not None
        self.orchestrator.send_signal(signal.SIGKILL)
        self.orchestrator.wait()

    @staticmethod
    def kill(process: subprocess.Popen[bytes]) -> None:
        """SIGKILL a process and reap it."""
        process.send_signal(signal.SIGKILL)
        process.wait()

    def stop(self) -> None:
        """Stop everything this harness started (SIGKILL: every part is built to be killed)."""
        for process in [*self.workers, *([self.orchestrator] if self.orchestrator else [])]:
            if process.poll() is None:
                self.kill(process)
        self.client.close()

    def publish_prices(self, region: str, until: datetime | None = None) -> None:
        """The region's real prices (the replayed SMARD series) for the past 8 days, up to ``until``."""
        feed = MarketFeed.from_settings(self.settings, [region])
        now = datetime.now(UTC)
        first = datetime.fromtimestamp(int((now - timedelta(days=8)).timestamp()) // 3600 * 3600, UTC)
        end = until or now + timedelta(days=1)
        self.history.insert_market_prices(feed.prices(first, end))

    def run_inputs(self, asset_id: str, region: str, interval: datetime | None = None) -> RunInputs:
        """A 1 MW / 2 MWh battery at half charge, bidding into the next open interval."""
        lead = timedelta(seconds=self.settings.bid_gate_lead_s + self.settings.bid_forecast_deadline_s + 30)
        interval = interval or next_interval(datetime.now(UTC), STEP, lead)
        return RunInputs(asset_id, region, interval, int(STEP.total_seconds()),
                         self.settings.bid_horizon_steps, 1.0, 2.0, 1.0)

    def request(self, run: RunInputs, rebid: int = 0, fetch_deadline_s: float | None = None) -> Requested:
        """Ask the orchestrator for a run (``fetch_deadline_s`` overrides the setting for this run)."""
        settings = self.settings
        if fetch_deadline_s is not None:
            settings = settings.model_copy(update={"bid_fetch_deadline_s": fetch_deadline_s})
        return request_run(settings, self.store, self.producer, self.redis, run, rebid=rebid)

    def entries(self, workflow_id: str | None = None) -> list[journal.Entry]:
        """The journal as it stands on workflow.events."""
        return read_journal(self.settings, workflow_id)

    def state(self, workflow_id: str) -> Workflow:
        """The run as its journal replays."""
        return journal.replay_entries(workflow_id, self.entries(workflow_id))

    def wait_for(self, workflow_id: str, done: str | None = None, timeout_s: float = 120.0) -> Workflow:
        """Wait until the run is final (or step ``done`` has its output); the state then."""
        deadline = time.monotonic() + timeout_s
        while True:
            state = self.state(workflow_id)
            reached = state.output(done) is not None if done else state.status in FINAL
            if reached or time.monotonic() > deadline:
                return state
            time.sleep(0.2)


@contextmanager
def bid_stack(settings: Settings, workdir: Path, workers: int = 1, *worker_args: str) -> Iterator[BidStack]:
    """An orchestrator and ``workers`` workers (started with ``worker_args``) on a running stack."""
    harness = BidStack(settings, workdir)
    try:
        harness.start_orchestrator()
        for _ in range(workers):
            harness.start_worker(*worker_args)
        yield harness
    finally:
        harness.stop()
