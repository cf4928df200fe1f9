"""Swagger UI, ReDoc and the dashboard load nothing from a CDN: every asset they name is served here.

On a disconnected network (an operator's control room, an air-gapped site) a
page that pulls its script from jsdelivr is blank. Each page's HTML may name
only same-origin URLs, and each of those URLs must answer 200 with the right
kind of content. No stack is needed: the pages and assets are static, so the
app runs in-process.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

from api.app import DOCS_ASSETS, create_app
from core.config import Settings


class _Urls(HTMLParser):
    """Every URL a page loads: ``src`` of scripts and images, ``href`` of stylesheets and icons."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        for key in ("src", "href"):
            if named.get(key) and (tag != "a"):
                self.urls.append(str(named[key]))


def _loaded_urls(html: str) -> list[str]:
    parser = _Urls()
    parser.feed(html)
    # Scripts inline in the page may load more (Swagger UI's ``url:`` of the schema, ReDoc's spec-url).
    parser.urls += re.findall(r"""(?:url:|spec-url=)\s*['"]([^'"]+)['"]""", html)
    return parser.urls


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(Settings())) as test_client:
        yield test_client


@pytest.mark.parametrize(("page", "kinds"), [
    ("/docs", {".js": "javascript", ".css": "text/css", ".png": "image/png", ".json": "application/json"}),
    ("/redoc", {".js": "javascript", ".png": "image/png", ".json": "application/json"}),
    ("/dashboard/", {".js": "javascript", ".css": "text/css"}),
])
def test_page_loads_only_local_assets(client: TestClient, page: str, kinds: dict[str, str]) -> None:
    response = client.get(page)
    assert response.status_code == 200
    urls = _loaded_urls(response.text)
    assert urls, f"{page} names no asset at all: the parser missed them"
    remote = [url for url in urls if not url.startswith("/") or url.startswith("//")]
    assert not remote, f"{page} loads from another origin: {remote}"
    for url in urls:
        asset = client.get(url)
        assert asset.status_code == 200, f"{page} names {url}, which answers {asset.status_code}"
        suffix = next(s for s in kinds if url.endswith(s))
        assert kinds[suffix] in asset.headers["content-type"], (url, asset.headers["content-type"])
        assert len(asset.content) > 1000, f"{url} is too small to be the asset"


def test_docs_assets_are_the_bundled_swagger_ui_and_redoc(client: TestClient) -> None:
    """The scripts are the real bundles (the globals the pages call), not placeholders."""
    assert "SwaggerUIBundle" in client.get(f"{DOCS_ASSETS}/swagger-ui-bundle.js").text
    assert "Redoc" in client.get(f"{DOCS_ASSETS}/redoc.standalone.js").text
    assert ".swagger-ui" in client.get(f"{DOCS_ASSETS}/swagger-ui.css").text
