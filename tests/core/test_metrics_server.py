"""serve_metrics: a service without a web server of its own is scrapable (and probeable) when asked."""

from __future__ import annotations

import urllib.request

from core.config import Settings
from core.metrics_server import serve_metrics
from tests.conftest import free_port


def test_metrics_are_served_on_the_configured_port_and_not_otherwise() -> None:
    assert serve_metrics(Settings(metrics_port=None)) is None
    port = free_port()
    assert serve_metrics(Settings(metrics_port=port, host="127.0.0.1")) == port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        assert b"python_info" in response.read()
    # a second service given the same port goes on without metrics
    assert serve_metrics(Settings(metrics_port=port, host="127.0.0.1")) is None
