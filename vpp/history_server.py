"""The embedded history server: one process owning a chDB directory, speaking ClickHouse HTTP.

chDB lets only one process open a data directory, yet every part of the
platform talks to ClickHouse through ``clickhouse-connect`` (so production only
changes ``VPP_CLICKHOUSE_URL``). This server is that one process. It serves the
subset of ClickHouse's HTTP interface clickhouse-connect uses:

* ``GET/HEAD /ping`` answers ``Ok.``;
* ``/`` with the SQL in the ``query`` parameter or the body; when the URL has
  ``query`` and there is a body, the body is insert data, loaded through
  ``INSERT ... FROM INFILE '<tmp file>' FORMAT <fmt>``;
* the ``database`` parameter selects the database, else the configured one
  (``--database``, the platform's ``VPP_CLICKHOUSE_DATABASE``), so ``SHOW
  TABLES`` lists the platform's tables as on a ClickHouse server whose user has
  that default database;
* ``param_<name>`` values fill ``{name:Type}`` placeholders (server-side
  binding, as clickhouse-connect and clickhouse-go send it);
* ``readonly=1|2`` runs the statement on a read-only session (writes refused
  with ClickHouse's code 164, READONLY);
* results in the query's ``FORMAT``, else ``default_format`` (clickhouse-go
  sends ``default_format=Native`` and no FORMAT), else ``TabSeparated``, with
  the ``X-ClickHouse-*`` headers clients read;
* credentials as ClickHouse takes them (``X-ClickHouse-User``/``-Key``
  headers, HTTP Basic, or ``user``/``password`` parameters) against the
  configured user (``--user``) and password (environment
  ``VPP_CLICKHOUSE_PASSWORD``, never a command-line argument; unset, the
  server refuses to start, so there is no default anyone could use): a wrong
  one is refused with code 516 (AUTHENTICATION_FAILED) and HTTP 401. ``/ping``
  needs none, as on ClickHouse;
* HTTP compression: request bodies with ``Content-Encoding`` gzip, deflate,
  lz4 (frame) or zstd are decompressed; with ``enable_http_compression=1`` the
  answer is compressed in the first of the client's ``Accept-Encoding`` this
  server has (what clickhouse-connect negotiates, and clickhouse-go with
  gzip/deflate). ClickHouse's own block compression (``compress=1``/
  ``decompress=1``, clickhouse-go's LZ4/ZSTD setting) is refused with a clear
  error: it needs CityHash checksums;
* errors as ClickHouse writes them (``Code: N. DB::Exception: ...``) with the
  ``X-ClickHouse-Exception-Code`` header and a 4xx/5xx status.

Concurrency: requests arrive on threads (stdlib ``ThreadingHTTPServer``). chDB
runs queries of different sessions of one process at once (it releases the
GIL), so reads borrow a session from a pool (``--readers``, 4) and never wait
behind another read or a slow dashboard query unless the pool is exhausted;
writes (inserts, DDL) have a session of their own under a lock, so a pool
full of slow reads never starves the dataflows' inserts; reads with
``readonly`` use a pool of read-only sessions. A session is used by one
request at a time, which keeps ``USE <database>`` per request correct.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import gzip
import hmac
import logging
import os
import queue
import re
import signal
import sys
import tempfile
import threading
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from urllib.parse import parse_qs, urlparse

import lz4.frame
from backports import zstd
from chdb import session as chdb_session

from core.config import Settings
from core.logs import configure_logging

log = logging.getLogger("vpp.history_server")

_FORMAT_AT_END = re.compile(r"\s+FORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$", re.IGNORECASE)
_INSERT_HEAD = re.compile(rb"\s*INSERT\s[^\n]*?\sFORMAT\s+[A-Za-z0-9_]+[ \t]*\r?\n", re.IGNORECASE)
_ERROR_CODE = re.compile(r"Code:\s*(\d+)")
_NO_RESULT_FORMAT = "TabSeparated"
#: Statements that only read: they run on a pooled reader session.
_READS = re.compile(r"^\s*(?:\(\s*)*(SELECT|WITH|SHOW|DESCRIBE|DESC|EXISTS|EXPLAIN|CHECK)\b", re.IGNORECASE)
#: Environment variable holding the password (kept off the command line, which `ps` shows).
PASSWORD_ENV = "VPP_CLICKHOUSE_PASSWORD"
_DECOMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.decompress, "x-gzip": gzip.decompress, "deflate": zlib.decompress,
    "lz4": lz4.frame.decompress, "zstd": zstd.decompress,
}
_COMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "lz4": lz4.frame.compress, "zstd": zstd.compress, "gzip": gzip.compress, "deflate": zlib.compress,
}
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


@dataclass(frozen=True)
class Access:
    """Who may query: the one user of this server and its password ("" accepts an empty one only)."""

    user: str = "default"
    password: str = field(default="", repr=False)

    def allows(self, user: str | None, password: str | None) -> bool:
        return (user or "default") == self.user and hmac.compare_digest((password or "").encode(),
                                                                        self.password.encode())


class ChdbEngine:
    """The chDB sessions of this process: a pool of readers, read-only readers, and one writer."""

    def __init__(self, data_dir: Path, database: str = "default", readers: int = 4) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        self.database = database
        self.upload_dir = Path(tempfile.mkdtemp(prefix="vpp-history-upload-"))
        self._write_lock = threading.Lock()
        # chDB's own lock failure surfaces as an opaque error, so take a lock of
        # our own first and say plainly who holds the directory.
        self._owner = (data_dir / ".vpp-history.lock").open("w")
        try:
            fcntl.flock(self._owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self._owner.close()
            raise HistoryServerError(_LOCK_HINT.format(dir=data_dir)) from exc
        self._session = chdb_session.Session(str(data_dir))  # the writer
        if database != "default":
            self._run(self._session, f"CREATE DATABASE IF NOT EXISTS `{database}`", _NO_RESULT_FORMAT, None)
        self._all = [self._session]
        self._readers: queue.SimpleQueue[chdb_session.Session] = queue.SimpleQueue()
        self._readonly: queue.SimpleQueue[chdb_session.Session] = queue.SimpleQueue()
        for pool, count in ((self._readers, max(1, readers)), (self._readonly, max(1, readers // 2))):
            for _ in range(count):
                session = chdb_session.Session(str(data_dir))
                if pool is self._readonly:
                    self._run(session, "SET readonly = 2", _NO_RESULT_FORMAT, None)
                self._all.append(session)
                pool.put(session)

    def close(self) -> None:
        """Release the data directory."""
        with self._write_lock:
            for session in reversed(self._all):
                session.close()
            self._owner.close()

    @contextmanager
    def _session_for(self, sql: str, readonly: bool, insert: bool) -> Iterator[chdb_session.Session]:
        """A session to run ``sql`` on, for this request alone."""
        if readonly or (not insert and _READS.match(sql)):
            pool = self._readonly if readonly else self._readers
            session = pool.get()
            try:
                yield session
            finally:
                pool.put(session)
            return
        with self._write_lock:
            yield self._session

    def execute(self, sql: str, database: str | None, insert_body: bytes | None,
                params: dict[str, str] | None = None, readonly: bool = False,
                default_format: str | None = None) -> tuple[bytes, str]:
        """Run one statement; return the result bytes and their format name."""
        sql = sql.strip().rstrip(";")
        match = _FORMAT_AT_END.search(sql)
        fmt = match.group(1) if match else (default_format or _NO_RESULT_FORMAT)
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
            with self._session_for(sql, readonly, insert_body is not None) as session:
                self._run(session, f"USE `{database or self.database}`", _NO_RESULT_FORMAT, None)
                return self._run(session, sql, fmt, params or None), fmt
        finally:
            if upload is not None:
                upload.unlink(missing_ok=True)

    @staticmethod
    def _run(session: chdb_session.Session, sql: str, fmt: str, params: dict[str, str] | None) -> bytes:
        try:
            result = session.query(sql, fmt, params=params) if params else session.query(sql, fmt)
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
    if code in (516, 192, 193, 194):  # AUTHENTICATION_FAILED, UNKNOWN_USER, WRONG_PASSWORD, REQUIRED_PASSWORD
        return 401
    if code == 164:  # READONLY
        return 403
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
        params = {k: v[-1] for k, v in parse_qs(urlparse(self.path).query, keep_blank_values=True).items()}
        query_id = params.get("query_id") or str(uuid.uuid4())
        user, password = self._credentials(params)
        if not self.server.access.allows(user, password):
            self._error(query_id, QueryError(516, f"Code: 516. DB::Exception: {user or 'default'}: "
                                             "Authentication failed: password is incorrect, or there is no "
                                             "user with such name. (AUTHENTICATION_FAILED)"))
            return
        if params.get("compress") == "1" or params.get("decompress") == "1":
            self._error(query_id, QueryError(
                1000, "Code: 1000. DB::Exception: ClickHouse block compression (compress=1/decompress=1) is "
                "not supported by the embedded history server; use HTTP compression (gzip, deflate, lz4, "
                "zstd) instead"))
            return
        encoding = (self.headers.get("Content-Encoding") or "").strip().lower()
        if encoding and encoding != "identity":
            decompress = _DECOMPRESS.get(encoding)
            if decompress is None:
                self._error(query_id, QueryError(
                    1000, f"Code: 1000. DB::Exception: Content-Encoding {encoding!r} is not supported "
                    f"(supported: {', '.join(sorted(_DECOMPRESS))})"))
                return
            try:
                body = decompress(body)
            except Exception as exc:  # any codec's failure: the body is not what its header says
                self._error(query_id, QueryError(
                    271, f"Code: 271. DB::Exception: cannot decompress the {encoding} body: {exc}. "
                    "(CANNOT_DECOMPRESS)"))
                return
        bound = {name[len("param_"):]: value for name, value in params.items() if name.startswith("param_")}
        try:
            sql, insert_body = _split_request(params, body)
        except UnicodeDecodeError:
            self._error(query_id, QueryError(62, "Code: 62. DB::Exception: the query is not valid UTF-8"))
            return
        if not sql.strip():
            self._error(query_id, QueryError(62, "Code: 62. DB::Exception: Empty query. (SYNTAX_ERROR)"))
            return
        try:
            data, fmt = self.server.engine.execute(
                sql, params.get("database") or None, insert_body, bound,
                readonly=params.get("readonly", "0") not in ("", "0"),
                default_format=params.get("default_format") or None)
        except QueryError as failure:
            self._error(query_id, failure)
            return
        content_encoding = self._answer_encoding(params)
        if content_encoding:
            data = _COMPRESS[content_encoding](data)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if content_encoding:
            self.send_header("Content-Encoding", content_encoding)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-ClickHouse-Query-Id", query_id)
        self.send_header("X-ClickHouse-Format", fmt)
        self.send_header("X-ClickHouse-Timezone", "UTC")
        self.send_header("X-ClickHouse-Server-Display-Name", _SERVER_NAME)
        self.send_header("X-ClickHouse-Summary", '{"read_rows":"0","written_rows":"0"}')
        self.end_headers()
        self.wfile.write(data)

    def _credentials(self, params: dict[str, str]) -> tuple[str | None, str | None]:
        """The user and password of a request, wherever ClickHouse would take them from."""
        user, password = self.headers.get("X-ClickHouse-User"), self.headers.get("X-ClickHouse-Key")
        authorization = self.headers.get("Authorization") or ""
        if user is None and authorization.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(authorization[6:].strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                user, password = "", None
        if user is None:
            user, password = params.get("user"), params.get("password")
        return user, password

    def _answer_encoding(self, params: dict[str, str]) -> str | None:
        """The encoding to compress the answer in: with ``enable_http_compression=1``, the client's first."""
        if params.get("enable_http_compression") != "1":
            return None
        for item in (self.headers.get("Accept-Encoding") or "").split(","):
            name = item.split(";")[0].strip().lower()
            if name in _COMPRESS:
                return name
        return None

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

    def __init__(self, engine: ChdbEngine, host: str, port: int, access: Access | None = None) -> None:
        self.engine = engine
        self.access = access or Access()
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


def make_server(data_dir: Path, host: str = "127.0.0.1", port: int = 0, *, database: str = "default",
                access: Access | None = None, readers: int = 4) -> HistoryHTTPServer:
    """A ready server (call ``serve_forever()``); port 0 picks a free port."""
    return HistoryHTTPServer(ChdbEngine(data_dir, database, readers), host, port, access)


def main(argv: list[str] | None = None) -> int:
    """Run in the foreground until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description="Serve a chDB directory over ClickHouse's HTTP interface.")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--database", default="default", help="the default database of every request")
    parser.add_argument("--user", default="default", help=f"the one user; its password is ${PASSWORD_ENV}")
    parser.add_argument("--readers", type=int, default=4, help="sessions reads run on at once")
    args = parser.parse_args(argv)
    configure_logging(Settings())  # VPP_LOG_FORMAT, VPP_LOG_LEVEL
    password = os.environ.get(PASSWORD_ENV)
    if password is None:  # no default password anyone could use
        log.error("%s is not set: the history server needs its user's password (`vpp stack up` passes the "
                  "one it generated into the data directory's secrets.json)", PASSWORD_ENV)
        return 2
    try:
        server = make_server(args.data_dir, args.host, args.port, database=args.database,
                             access=Access(args.user, password), readers=args.readers)
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
