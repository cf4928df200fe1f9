"""The embedded history server: one process owning a chDB directory, speaking ClickHouse HTTP.

chDB lets only one process open a data directory, yet every part of the
platform talks to ClickHouse through ``clickhouse-connect`` (so production only
changes ``VPP_CLICKHOUSE_URL``). This server is that one process. It serves the
subset of ClickHouse's HTTP interface clickhouse-connect uses:

* ``GET/HEAD /ping`` answers ``Ok.``;
* ``/`` with the SQL in the ``query`` parameter or the body; when the URL has
  ``query`` and there is a body, the body is insert data, loaded through
  ``INSERT ... FROM INFILE '<tmp file>' FORMAT <fmt>``;
* the ``database`` parameter selects the database; other settings parameters
  are ignored;
* results in the query's ``FORMAT`` (default ``TabSeparated``), with the
  ``X-ClickHouse-*`` headers clients read;
* errors as ClickHouse writes them (``Code: N. DB::Exception: ...``) with the
  ``X-ClickHouse-Exception-Code`` header and a 4xx/5xx status.

Concurrency: requests arrive on threads (stdlib ``ThreadingHTTPServer``) and
run one at a time on a single chDB session under a lock. chDB's session is not
documented as thread-safe, and serialising keeps ``USE <database>`` per request
correct; queries on this local store take milliseconds, so readers and a writer
interleave without visible waiting. Compressed request bodies are refused with
a clear error: the platform's client factory (:func:`core.history.connect`)
disables compression for this server.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import re
import signal
import sys
import tempfile
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from urllib.parse import parse_qs, urlparse

from chdb import session as chdb_session

log = logging.getLogger("vpp.history_server")

_FORMAT_AT_END = re.compile(r"\s+FORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$", re.IGNORECASE)
_INSERT_HEAD = re.compile(rb"\s*INSERT\s[^\n]*?\sFORMAT\s+[A-Za-z0-9_]+[ \t]*\r?\n", re.IGNORECASE)
_ERROR_CODE = re.compile(r"Code:\s*(\d+)")
_NO_RESULT_FORMAT = "TabSeparated"
_SERVER_NAME = "vpp-history"
_LOCK_HINT = (
    "history data directory {dir} is in use by another process; stop it with `vpp stack down` "
    "or choose another VPP_DATA_DIR"
)


class HistoryServerError(RuntimeError):
    """The server cannot start; the message says what to do."""


class QueryError(Exception):
    """A query failed inside chDB; carries ClickHouse's error code and message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _failure(message: str) -> QueryError:
    match = _ERROR_CODE.search(message)
    code = int(match.group(1)) if match else 1000
    text = message.strip()
    if not text.startswith("Code:"):
        text = f"Code: {code}. DB::Exception: {text}"
    return QueryError(code, text)


class ChdbEngine:
    """The one chDB session of this process, used by one request at a time."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        self.upload_dir = Path(tempfile.mkdtemp(prefix="vpp-history-upload-"))
        self._lock = threading.Lock()
        # chDB's own lock failure surfaces as an opaque error, so take a lock of
        # our own first and say plainly who holds the directory.
        self._owner = (data_dir / ".vpp-history.lock").open("w")
        try:
            fcntl.flock(self._owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self._owner.close()
            raise HistoryServerError(_LOCK_HINT.format(dir=data_dir)) from exc
        self._session = chdb_session.Session(str(data_dir))

    def close(self) -> None:
        """Release the data directory."""
        with self._lock:
            self._session.close()
            self._owner.close()

    def execute(self, sql: str, database: str | None, insert_body: bytes | None) -> tuple[bytes, str]:
        """Run one statement; return the result bytes and their format name."""
        sql = sql.strip().rstrip(";")
        match = _FORMAT_AT_END.search(sql)
        fmt = match.group(1) if match else _NO_RESULT_FORMAT
        upload: Path | None = None
        if insert_body is not None:
            if not match:
                raise QueryError(62, "Code: 62. DB::Exception: an insert with a body needs FORMAT <name>")
            upload = self.upload_dir / f"{uuid.uuid4().hex}.bin"
            upload.write_bytes(insert_body)
            sql = f"{sql[: match.start()]} FROM INFILE '{upload}' FORMAT {fmt}"
        elif match:
            sql = sql[: match.start()]
        try:
            with self._lock:
                if database:
                    self._run(f"USE `{database}`", _NO_RESULT_FORMAT)
                return self._run(sql, fmt), fmt
        finally:
            if upload is not None:
                upload.unlink(missing_ok=True)

    def _run(self, sql: str, fmt: str) -> bytes:
        try:
            result = self._session.query(sql, fmt)
        except Exception as exc:
            raise _failure(str(exc)) from exc
        if result.has_error():
            raise _failure(result.error_message())
        return bytes(result.bytes())


def _split_request(params: dict[str, str], body: bytes) -> tuple[str, bytes | None]:
    """The SQL and the insert data of a request, following ClickHouse's HTTP rules.

    With ``query`` in the URL the body is data. Otherwise the body is SQL, except
    that an ``INSERT ... FORMAT <name>`` statement may be followed on the next
    line by its data (how clickhouse-connect sends ``client.insert``).
    """
    if "query" in params:
        return params["query"], (body or None)
    match = _INSERT_HEAD.match(body)
    if match:
        return body[: match.end()].decode(), body[match.end() :]
    return body.decode(), None


def _status_for(code: int) -> int:
    """HTTP status ClickHouse uses for an error code: 4xx for the caller's mistakes."""
    if code in (60, 81):  # UNKNOWN_TABLE, UNKNOWN_DATABASE
        return 404
    if code in (62, 47, 46, 27, 53, 117):  # syntax, unknown identifier/function, parse/type errors
        return 400
    return 500


class _Handler(BaseHTTPRequestHandler):
    server: HistoryHTTPServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, a keep-alive
    # client's delayed ACK would stall every response by ~40 ms.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        log.debug(format, *args)

    def do_HEAD(self) -> None:
        self._ping(with_body=False)

    def do_GET(self) -> None:
        if urlparse(self.path).path == "/ping":
            self._ping(with_body=True)
            return
        self._query(body=b"")

    def do_POST(self) -> None:
        self._query(body=self._read_body())

    def _read_body(self) -> bytes:
        """The request body, whole: clickhouse-connect streams inserts with chunked encoding."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # the CRLF after each chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _ping(self, with_body: bool) -> None:
        payload = b"Ok.\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=UTF-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if with_body:
            self.wfile.write(payload)

    def _query(self, body: bytes) -> None:
        params = {k: v[-1] for k, v in parse_qs(urlparse(self.path).query).items()}
        query_id = params.get("query_id") or str(uuid.uuid4())
        if self.headers.get("Content-Encoding"):
            self._error(query_id, QueryError(
                1000, "Code: 1000. DB::Exception: compressed request bodies are not supported by the "
                "embedded history server; create the client with compress=False (core.history.connect does)"))
            return
        try:
            sql, insert_body = _split_request(params, body)
        except UnicodeDecodeError:
            self._error(query_id, QueryError(62, "Code: 62. DB::Exception: the query is not valid UTF-8"))
            return
        if not sql.strip():
            self._error(query_id, QueryError(62, "Code: 62. DB::Exception: Empty query. (SYNTAX_ERROR)"))
            return
        try:
            data, fmt = self.server.engine.execute(sql, params.get("database"), insert_body)
        except QueryError as failure:
            self._error(query_id, failure)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-ClickHouse-Query-Id", query_id)
        self.send_header("X-ClickHouse-Format", fmt)
        self.send_header("X-ClickHouse-Timezone", "UTC")
        self.send_header("X-ClickHouse-Server-Display-Name", _SERVER_NAME)
        self.send_header("X-ClickHouse-Summary", '{"read_rows":"0","written_rows":"0"}')
        self.end_headers()
        self.wfile.write(data)

    def _error(self, query_id: str, failure: QueryError) -> None:
        payload = (failure.message.rstrip() + "\n").encode()
        self.send_response(_status_for(failure.code))
        self.send_header("Content-Type", "text/plain; charset=UTF-8")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-ClickHouse-Exception-Code", str(failure.code))
        self.send_header("X-ClickHouse-Query-Id", query_id)
        self.end_headers()
        self.wfile.write(payload)


class HistoryHTTPServer(ThreadingHTTPServer):
    """A threaded HTTP server bound to one :class:`ChdbEngine`."""

    daemon_threads = True

    def __init__(self, engine: ChdbEngine, host: str, port: int) -> None:
        self.engine = engine
        try:
            super().__init__((host, port), _Handler)
        except OSError as exc:
            engine.close()
            raise HistoryServerError(
                f"cannot listen on {host}:{port} ({exc.strerror}); stop whatever uses the port "
                "or set VPP_CLICKHOUSE_PORT"
            ) from exc

    def server_close(self) -> None:
        super().server_close()
        self.engine.close()


def make_server(data_dir: Path, host: str = "127.0.0.1", port: int = 0) -> HistoryHTTPServer:
    """A ready server (call ``serve_forever()``); port 0 picks a free port."""
    return HistoryHTTPServer(ChdbEngine(data_dir), host, port)


def main(argv: list[str] | None = None) -> int:
    """Run in the foreground until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description="Serve a chDB directory over ClickHouse's HTTP interface.")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8123)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        server = make_server(args.data_dir, args.host, args.port)
    except HistoryServerError as exc:
        log.error("%s", exc)
        return 2

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: shutting down", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info("serving %s on http://%s:%d (pid %d)", args.data_dir, args.host, args.port, os.getpid())
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
