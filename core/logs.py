"""One logging setup for every process: one line per event, as text or JSON, at one level.

Every entry point (the ``vpp`` CLI and the services it starts, ``python -m api``,
``python -m edge_gateway``, the simulator, the dataflows under ``bytewax.run``,
the history server) calls :func:`configure_logging` once at start, so
``VPP_LOG_FORMAT`` (``text`` or ``json``) and ``VPP_LOG_LEVEL`` mean the same
everywhere. The standard library only: a log shipper (Loki, Fluent Bit,
CloudWatch) splits records on newlines, so a record is always one line, its
traceback included (escaped in text, a field in JSON).

Per-event noise is turned down here, in one place: the WebSocket library's
INFO line for every device connection and uvicorn's own access log (the API
writes its own, :data:`ACCESS_LOGGER`, with the duration).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from core.config import Settings

LogFormat = Literal["text", "json"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
#: The API's access log: one INFO line per request (method, path, status, duration_ms).
ACCESS_LOGGER = "vpp.api.access"
#: Libraries that log an INFO line per connection or per request: kept to warnings.
QUIET_LOGGERS = ("websockets", "websockets.server", "websockets.client", "uvicorn.access", "httpx",
                 "httpcore", "urllib3")
#: Attributes every LogRecord has; anything else on a record came from ``extra=`` and is a field
#: (except uvicorn's ``color_message``, the same message with terminal colours).
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message", "asctime", "taskName", "color_message"}


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _extra(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


def _traceback(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    text = formatter.formatException(record.exc_info) if record.exc_info else None
    if record.stack_info:
        text = f"{text}\n{record.stack_info}" if text else record.stack_info
    return text


class JsonFormatter(logging.Formatter):
    """A record as one JSON object: time (UTC), level, logger, message, the ``extra`` fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {"time": _timestamp(record), "level": record.levelname,
                                    "logger": record.name, "message": record.getMessage().rstrip()}
        document.update(_extra(record))
        traceback = _traceback(self, record)
        if traceback:
            document["exception"] = traceback
        return json.dumps(document, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``TIME LEVEL logger: message key=value ...`` on one line; newlines (tracebacks) escaped as ``\\n``."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname} {record.name}: {record.getMessage().rstrip()}"
        fields = _extra(record)
        if fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        traceback = _traceback(self, record)
        if traceback:
            line += " | " + traceback
        return line.replace("\r", "").replace("\n", "\\n")


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record comes (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, _: IO[str]) -> None:
        """Ignored: the stream is always the current stderr."""


def setup_logging(log_format: LogFormat = "text", level: LogLevel | str = "INFO",
                  stream: IO[str] | None = None) -> None:
    """Send every record at ``level`` or above to ``stream`` (stderr) as one line of ``log_format``.

    Idempotent: a second call replaces the handler of the first, so an entry point that
    is also a ``vpp`` subcommand may call it again.
    """
    handler: logging.Handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_vpp", False):
            root.removeHandler(old)
    handler._vpp = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    for name in ("uvicorn", "uvicorn.error"):
        # uvicorn may have installed handlers of its own: its records go through ours instead.
        named = logging.getLogger(name)
        named.handlers.clear()
        named.propagate = True
    logging.captureWarnings(True)


def configure_logging(settings: Settings) -> None:
    """:func:`setup_logging` from ``VPP_LOG_FORMAT`` and ``VPP_LOG_LEVEL``."""
    setup_logging(settings.log_format, settings.log_level)
