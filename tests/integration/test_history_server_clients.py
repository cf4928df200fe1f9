"""The embedded history server answers standard ClickHouse clients as ClickHouse would.

Requests are sent exactly as clickhouse-go's HTTP transport shapes them (POST, SQL in the body,
``default_format=Native`` and no FORMAT, ``database``, settings and ``param_*`` in the URL, HTTP Basic
credentials, gzip bodies with ``enable_http_compression=1``; inserts with the statement in ``query`` and a
Native body) and the answers are decoded from ClickHouse's Native format; clickhouse-connect itself runs
with lz4 compression, credentials, server-side parameters and ``readonly``. A slow query does not delay
``SELECT 1``, and inserts are not starved by slow reads.
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


def _timed(server: Server, sql: str) -> tuple[float, float]:
    """(start, end) of one query, monotonic seconds."""
    start = time.monotonic()
    response = httpx.post(f"{server.url}/", content=sql.encode(), auth=(USER, PASSWORD), timeout=60)
    assert response.status_code == 200, response.text
    return start, time.monotonic()


def test_a_slow_query_does_not_delay_select_1_nor_starve_inserts(server: Server) -> None:
    baseline = min(end - start for start, end in (_timed(server, "SELECT 1") for _ in range(5)))
    slow: list[tuple[float, float]] = []
    thread = threading.Thread(target=lambda: slow.append(_timed(server, "SELECT sleep(2)")))
    thread.start()
    time.sleep(0.3)  # let it start
    during = [_timed(server, "SELECT 1") for _ in range(5)]
    thread.join(60)
    (slow_start, slow_end), = slow
    # Queued behind the slow query, the first SELECT 1 would end after it. Not all five: on a loaded
    # machine five round trips can outlast the two seconds (seen at a load average of 20).
    assert during[0][1] < slow_end, "the fast query ran while the slow one did"
    delay = min(end - start for start, end in during) - baseline
    assert delay < (slow_end - slow_start) / 2, (
        f"SELECT 1 waited {delay * 1000:.0f} ms behind a {slow_end - slow_start:.1f} s query")

    # More slow reads than reader sessions: an insert still goes through on the writer session.
    _timed(server, "CREATE TABLE IF NOT EXISTS starve (x UInt8) ENGINE = MergeTree ORDER BY x")
    readers = [threading.Thread(target=lambda: slow.append(_timed(server, "SELECT sleep(2)")))
               for _ in range(5)]
    for reader in readers:
        reader.start()
    time.sleep(0.3)
    _, inserted = _timed(server, "INSERT INTO starve VALUES (1)")
    for reader in readers:
        reader.join(60)
    assert inserted < min(end for _, end in slow[1:]), "the insert did not wait for the slow reads"

