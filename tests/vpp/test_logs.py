"""Logs an operator can ship: one line per event, text or JSON, one level, an API access log.

VPP_LOG_FORMAT and VPP_LOG_LEVEL mean the same in every process (core/logs.py); a traceback
stays on its record's line; the WebSocket library's per-connection INFO lines are gone; the API
writes one access line per request with method, path, status and duration.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError
from typer.testing import CliRunner

from api.metrics import MetricsMiddleware
from core.config import Settings
from core.logs import ACCESS_LOGGER, JsonFormatter, TextFormatter, setup_logging
from tests.conftest import free_port
from vpp.cli import app
from vpp.dataflows import settings_env

CHECKOUT = Path(__file__).resolve().parents[2]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the root logger and the quietened loggers back as they were."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in ("websockets", "websockets.server")}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, old in levels.items():
        logging.getLogger(name).setLevel(old)
    logging.captureWarnings(False)


def _raise_and_log(name: str) -> None:
    try:
        raise RuntimeError("first line\nsecond line")
    except RuntimeError:
        logging.getLogger(name).exception("it failed")


def test_json_lines_carry_fields_and_keep_the_traceback_on_one_line(restore_logging: None) -> None:
    out = io.StringIO()
    setup_logging("json", "INFO", stream=out)
    logging.getLogger("vpp.test").info("hello %s", "world", extra={"site_id": "s-1", "n": 3})
    logging.getLogger("vpp.test").debug("below the level")
    _raise_and_log("vpp.test")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "hello world" and first["level"] == "INFO" and first["logger"] == "vpp.test"
    assert first["site_id"] == "s-1" and first["n"] == 3 and first["time"].endswith("Z")
    assert second["level"] == "ERROR" and "RuntimeError: first line\nsecond line" in second["exception"]


def test_text_lines_escape_newlines_so_a_record_is_one_line(restore_logging: None) -> None:
    out = io.StringIO()
    setup_logging("text", "WARNING", stream=out)
    logging.getLogger("vpp.test").info("not shown")
    logging.getLogger("vpp.test").warning("one\ntwo", extra={"reason": "x"})
    _raise_and_log("vpp.test")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert " WARNING vpp.test: one\\ntwo reason=x" in lines[0]
    assert " ERROR vpp.test: it failed | Traceback" in lines[1] and "second line" in lines[1]


def test_a_second_setup_replaces_the_first(restore_logging: None) -> None:
    first, second = io.StringIO(), io.StringIO()
    setup_logging("text", "INFO", stream=first)
    setup_logging("json", "INFO", stream=second)
    logging.getLogger("vpp.test").info("once")
    assert first.getvalue() == "" and len(second.getvalue().splitlines()) == 1


def test_no_info_line_per_device_connection(restore_logging: None) -> None:
    out = io.StringIO()
    setup_logging("text", "INFO", stream=out)
    logging.getLogger("websockets.server").info("connection open")  # what websockets logs per connection
    logging.getLogger("websockets.server").warning("a real problem")
    assert "connection open" not in out.getvalue() and "a real problem" in out.getvalue()


def test_settings_read_format_and_level_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VPP_LOG_FORMAT", "JSON")
    monkeypatch.setenv("VPP_LOG_LEVEL", "debug")
    settings = Settings()
    assert (settings.log_format, settings.log_level) == ("json", "DEBUG")
    monkeypatch.setenv("VPP_LOG_FORMAT", "xml")
    with pytest.raises(ValidationError, match="log_format"):
        Settings()


def test_the_cli_sets_up_logging_from_the_environment(tmp_path: Path, restore_logging: None) -> None:
    result = CliRunner().invoke(
        app, ["status", "--json"],
        env={"VPP_DATA_DIR": str(tmp_path), "VPP_LOG_FORMAT": "json", "VPP_LOG_LEVEL": "warning"})
    assert result.exit_code == 1, result.output  # nothing runs there
    ours = [h for h in logging.getLogger().handlers if isinstance(h.formatter, JsonFormatter)]
    assert ours and logging.getLogger().level == logging.WARNING
    assert not [h for h in logging.getLogger().handlers if isinstance(h.formatter, TextFormatter)]


def test_the_access_log_has_method_path_status_and_duration(caplog: pytest.LogCaptureFixture) -> None:
    api = FastAPI()
    api.add_middleware(MetricsMiddleware)

    @api.get("/things/{thing}")
    def thing(thing: str) -> dict[str, str]:
        return {"thing": thing}

    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER), TestClient(api) as client:
        assert client.get("/things/a?token=secret").status_code == 200
        assert client.get("/nowhere").status_code == 404
    records = [r for r in caplog.records if r.name == ACCESS_LOGGER]
    assert [(r.method, r.path, r.status) for r in records] == [  # type: ignore[attr-defined]
        ("GET", "/things/a", 200), ("GET", "/nowhere", 404)]
    assert all(r.duration_ms >= 0 for r in records)  # type: ignore[attr-defined]
    assert "secret" not in caplog.text, "the query string (?token=) never reaches the log"


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except OSError:
        return 0


@pytest.mark.slow  # an API process start (~10 s on a busy machine): pytest -m slow -k access_line
@pytest.mark.integration
def test_the_api_process_logs_json_lines_with_an_access_line(stack_settings: Settings,
                                                             tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, **settings_env(stack_settings), "VPP_API_PORT": str(port), "VPP_LOG_FORMAT": "json",
           "VPP_LOG_LEVEL": "INFO", "PYTHONPATH": str(CHECKOUT)}
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "api"], env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while _get(f"http://127.0.0.1:{port}/livez") != 200:
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    documents = [json.loads(line) for line in lines]  # every line is one JSON document
    access = [d for d in documents if d["logger"] == ACCESS_LOGGER and d["path"] == "/livez"]
    assert access and access[-1]["status"] == 200 and access[-1]["method"] == "GET"
    assert access[-1]["duration_ms"] >= 0
    assert any(d["logger"].startswith("uvicorn") for d in documents), "uvicorn logs through our handler"
