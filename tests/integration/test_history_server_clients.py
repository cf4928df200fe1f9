"""The embedded history server answers standard ClickHouse clients as ClickHouse would.

Requests are sent exactly as clickhouse-go's HTTP transport shapes them (POST, SQL in the body,
``default_format=Native`` and no FORMAT, ``database``, settings and ``param_*`` in the URL, HTTP Basic
credentials, gzip bodies with ``enable_http_compression=1``; inserts with the statement in ``query`` and a
Native body) and the answers are decoded from ClickHouse's Native format; clickhouse-connect itself runs
with lz4 compression, credentials, server-side parameters and ``readonly``. A slow query does not delay
``SELECT 1``, and inserts are not starved by slow reads (shown by order of events, not by timing).
"""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import clickhouse_connect
import httpx
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from tests.conftest import free_port

pytestmark = pytest.mark.integration

USER, PASSWORD = "grafana", "s3cret-for-this-test"


@dataclass(frozen=True)
class Server:
    url: str
    port: int


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port = free_port()
    env = {**os.environ, "VPP_CLICKHOUSE_PASSWORD": PASSWORD}
    process = subprocess.Popen(
        [sys.executable, "-m", "vpp.history_server", "--data-dir", str(tmp_path_factory.mktemp("chs")),
         "--port", str(port), "--database", "vpp", "--user", USER, "--readers", "3"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ping", timeout=2).text == "Ok.\n":
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    else:
        process.kill()
        raise AssertionError(f"history server did not start: {process.communicate()[1].decode()[-2000:]}")
    try:
        yield Server(url, port)
    finally:
        process.terminate()
        process.wait(30)


# ---- ClickHouse Native format, as clickhouse-go writes and reads it (no block info over HTTP) ----------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _string(value: str) -> bytes:
    raw = value.encode()
    return _varint(len(raw)) + raw


def native_block(columns: list[tuple[str, str, list[Any]]]) -> bytes:
    """One Native block of UInt64, Float64 and String columns."""
    rows = len(columns[0][2])
    out = bytearray(_varint(len(columns)) + _varint(rows))
    for name, kind, values in columns:
        out += _string(name) + _string(kind)
        for value in values:
            out += {"UInt64": lambda v: struct.pack("<Q", v), "Float64": lambda v: struct.pack("<d", v),
                    "String": _string}[kind](value)
    return bytes(out)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def varint(self) -> int:
        shift = result = 0
        while True:
            byte = self.data[self.at]
            self.at += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return result

    def take(self, n: int) -> bytes:
        chunk = self.data[self.at:self.at + n]
        self.at += n
        return chunk

    def string(self) -> str:
        return self.take(self.varint()).decode()


def decode_native(data: bytes) -> dict[str, list[Any]]:
    """Every block of a Native answer, column by name (UInt8/32/64, Float64, String)."""
    reader, columns = _Reader(data), dict[str, list[Any]]()
    while reader.at < len(data):
        ncols, nrows = reader.varint(), reader.varint()
        for _ in range(ncols):
            name, kind = reader.string(), reader.string()
            fixed = {"UInt8": "<B", "UInt32": "<I", "UInt64": "<Q", "Float64": "<d"}
            values: list[Any] = []
            for _ in range(nrows):
                if kind == "String":
                    values.append(reader.string())
                else:
                    fmt = fixed[kind]
                    values.append(struct.unpack(fmt, reader.take(struct.calcsize(fmt)))[0])
            columns.setdefault(name, []).extend(values)
    return columns


def go_request(server: Server, sql: str | None, body: bytes = b"", *,
               auth: tuple[str, str] = (USER, PASSWORD), params: dict[str, str] | None = None,
               headers: dict[str, str] | None = None) -> httpx.Response:
    """A POST as clickhouse-go's HTTP transport sends it (Basic auth from the DSN's user:password)."""
    query = {"database": "vpp", **(params or {}), "default_format": "Native"}
    if sql is not None and body:
        query["query"] = sql
    elif sql is not None:
        body = sql.encode()
    return httpx.post(f"{server.url}/", params=query, content=body, auth=auth, headers=headers or {},
                      timeout=30)


def test_clickhouse_go_request_shapes_decode(server: Server) -> None:
    first = go_request(server, "SELECT timeZone()")  # what clickhouse-go asks when it connects
    assert first.status_code == 200, first.text
    (zone,) = decode_native(first.content)["timeZone()"]
    assert zone, "a time zone name clickhouse-go can load"
    created = go_request(server, "CREATE TABLE IF NOT EXISTS go_rows (id UInt64, name String, kw Float64) "
                                 "ENGINE = MergeTree ORDER BY id")
    assert created.status_code == 200, created.text
    block = native_block([("id", "UInt64", [1, 2, 3]), ("name", "String", ["a", "b", "c"]),
                          ("kw", "Float64", [1.5, -2.0, 3.25])])
    inserted = go_request(server, "INSERT INTO go_rows FORMAT Native", block)
    assert inserted.status_code == 200, inserted.text
    rows = go_request(server, "SELECT id, name, kw FROM go_rows WHERE id >= {low:UInt64} ORDER BY id",
                      params={"param_low": "2"})
    assert rows.status_code == 200, rows.text
    assert rows.headers["X-ClickHouse-Format"] == "Native"
    assert decode_native(rows.content) == {"id": [2, 3], "name": ["b", "c"], "kw": [-2.0, 3.25]}
    # gzip, as clickhouse-go's CompressionGZIP sends and reads it
    zipped = go_request(server, None, gzip.compress(b"SELECT count() AS n FROM go_rows"),
                        params={"enable_http_compression": "1"},
                        headers={"Content-Encoding": "gzip", "Accept-Encoding": "gzip"})
    assert zipped.status_code == 200, zipped.text
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert decode_native(zipped.content) == {"n": [3]}  # httpx undid the gzip, as Go's reader does


def test_credentials_are_checked_as_clickhouse_does(server: Server) -> None:
    wrong = go_request(server, "SELECT 1", auth=(USER, "not-the-password"))
    assert wrong.status_code == 401 and wrong.headers["X-ClickHouse-Exception-Code"] == "516"
    assert "AUTHENTICATION_FAILED" in wrong.text
    nobody = httpx.post(f"{server.url}/", content=b"SELECT 1", timeout=30)
    assert nobody.status_code == 401
    by_header = httpx.post(f"{server.url}/", content=b"SELECT 1", timeout=30,
                           headers={"X-ClickHouse-User": USER, "X-ClickHouse-Key": PASSWORD})
    assert by_header.status_code == 200 and by_header.text == "1\n"
    assert httpx.get(f"{server.url}/ping", timeout=30).status_code == 200  # no credentials needed


def test_clickhouse_connect_with_compression_parameters_and_readonly(server: Server) -> None:
    client = clickhouse_connect.get_client(host="127.0.0.1", port=server.port, username=USER,
                                           password=PASSWORD, compress="lz4")
    try:
        assert client.command("SELECT currentDatabase()") == "vpp", "the configured database is the default"
        client.command("CREATE TABLE IF NOT EXISTS cc_rows (id UInt64, kw Float64) "
                       "ENGINE = MergeTree ORDER BY id")
        client.insert("cc_rows", [[i, i * 0.5] for i in range(1000)], column_names=["id", "kw"])
        tables = [row[0] for row in client.query("SHOW TABLES").result_rows]
        assert "cc_rows" in tables, tables
        bound = client.query("SELECT sum(kw) FROM cc_rows WHERE id < {n:UInt32}", parameters={"n": 10})
        assert bound.result_rows == [(22.5,)]
        big = client.query("SELECT id FROM cc_rows ORDER BY id")  # a compressed answer, decoded
        assert [row[0] for row in big.result_rows] == list(range(1000))
    finally:
        client.close()
    reader = clickhouse_connect.get_client(host="127.0.0.1", port=server.port, username=USER,
                                           password=PASSWORD, settings={"readonly": 1})
    try:
        assert reader.command("SELECT count() FROM cc_rows") == 1000
        with pytest.raises(DatabaseError, match=r"164|READONLY"):
            reader.command("CREATE TABLE cc_refused (x UInt8) ENGINE = Memory")
    finally:
        reader.close()


def _post(server: Server, sql: str, timeout_s: float = 120) -> str:
    """One statement over HTTP; its answer."""
    response = httpx.post(f"{server.url}/", content=sql.encode(), auth=(USER, PASSWORD), timeout=timeout_s)
    assert response.status_code == 200, response.text
    return response.text


class Gate:
    """An HTTP file that ClickHouse's ``url()`` reads, answered only once the test opens the gate.

    A query reading it is known to be running inside the server when its request arrives here, and
    it ends when the test says: "the fast query finished while the slow one ran" is then a matter of
    order, not of how long anything took on a loaded machine.
    """

    def __init__(self) -> None:
        self.arrived = threading.Semaphore(0)
        self.opened = threading.Event()
        gate = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:  # a size probe: answered at once, not a reading query
                self.send_response(200)
                self.end_headers()

            def do_GET(self) -> None:
                gate.arrived.release()
                gate.opened.wait(300)
                body = b"1\n"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._thread.start()
        #: A read that runs until the gate opens.
        port = self._http.server_address[1]
        self.slow_sql = f"SELECT count() FROM url('http://127.0.0.1:{port}/rows.csv', CSV, 'x UInt8')"

    def wait_arrivals(self, n: int, timeout_s: float = 120) -> bool:
        """True once ``n`` more slow queries are running in the server."""
        deadline = time.monotonic() + timeout_s
        return all(self.arrived.acquire(timeout=max(0.0, deadline - time.monotonic())) for _ in range(n))

    def close(self) -> None:
        self.opened.set()
        self._http.shutdown()
        self._http.server_close()


@pytest.fixture
def gate() -> Iterator[Gate]:
    opened = Gate()
    yield opened
    opened.close()


def test_a_slow_query_does_not_delay_select_1_nor_starve_inserts(server: Server, gate: Gate) -> None:
    """Reads run side by side, and an insert goes through with every reader session busy.

    The slow reads hold the server until the gate opens, so each check is an order of events: the
    fast statement finished while the slow ones were known to be running and could not have ended.
    """
    results: list[str] = []

    def slow_read() -> None:
        results.append(_post(server, gate.slow_sql))

    first = threading.Thread(target=slow_read)
    first.start()
    assert gate.wait_arrivals(1), "the slow query never started"
    assert _post(server, "SELECT 1").strip() == "1", "SELECT 1 answered while the slow query still ran"
    assert not results, "the slow query cannot end before the gate opens"

    # More slow reads than reader sessions (--readers 3; the first still holds one): an insert still
    # goes through, on the writer session, while every reader is busy.
    _post(server, "CREATE TABLE IF NOT EXISTS starve (x UInt8) ENGINE = MergeTree ORDER BY x")
    readers = [threading.Thread(target=slow_read) for _ in range(4)]
    for reader in readers:
        reader.start()
    assert gate.wait_arrivals(2), "the pool's other two sessions never took a slow read"
    _post(server, "INSERT INTO starve VALUES (1)")
    assert not results, "the insert went through while every reader session was held"
    assert not gate.arrived.acquire(timeout=0), "no more reads run at once than there are reader sessions"

    gate.opened.set()
    for thread in [first, *readers]:
        thread.join(120)
    assert results == ["1\n"] * 5, "the queued reads ran once sessions came free"
    assert _post(server, "SELECT count() FROM starve").strip() == "1"
