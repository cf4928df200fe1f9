"""Health, metrics and the dashboard page: what is not a domain of its own."""

from __future__ import annotations

from importlib import resources as package_files
from pathlib import Path

from fastapi import APIRouter, HTTPException, Response, status
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import ResourcesDep

router = APIRouter(tags=["system"])

DASHBOARD_DIR = Path(__file__).resolve().parent.parent / "dashboard"


def plotly_js() -> Path | None:
    """plotly.js, served locally so the dashboard needs no CDN; None when it is nowhere.

    The image carries only the file, copied out of the plotly wheel into the dashboard's own files
    (Dockerfile); a development install (the dev extra) reads it from the installed plotly package.
    """
    vendored = DASHBOARD_DIR / "plotly.min.js"
    if vendored.is_file():
        return vendored
    try:
        return Path(str(package_files.files("plotly").joinpath("package_data", "plotly.min.js")))
    except ModuleNotFoundError:
        return None


@router.get("/healthz", summary="Readiness (as /readyz): 200 while Redis answers")
async def healthz(resources: ResourcesDep) -> JSONResponse:
    """503 when the live store is unreachable (the handler in api.errors answers it)."""
    await resources.aredis.ping()
    return JSONResponse({"status": "ok"})


@router.get("/readyz", summary="Readiness: 200 while Redis answers")
async def readyz(resources: ResourcesDep) -> JSONResponse:
    """503 when the live store is unreachable: take this instance out of the load balancer."""
    return await healthz(resources)


@router.get("/livez", summary="Liveness: 200 while the process serves requests")
def livez() -> JSONResponse:
    """Asks no dependency, so a Redis blip never makes the kubelet restart the API."""
    return JSONResponse({"status": "alive"})


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics() -> Response:
    """Request counts and latencies per route, and the process's own metrics."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@router.get("/", include_in_schema=False)
def root() -> RedirectResponse:
    return RedirectResponse("/dashboard/")


@router.get("/dashboard/", include_in_schema=False)
def dashboard() -> FileResponse:
    return FileResponse(DASHBOARD_DIR / "index.html", media_type="text/html")


@router.get("/dashboard/plotly.min.js", include_in_schema=False)
def dashboard_plotly() -> FileResponse:
    path = plotly_js()
    if path is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "plotly.js is not installed: build the image (it "
                            "copies it) or `pip install plotly`")
    return FileResponse(path, media_type="text/javascript",
                        headers={"Cache-Control": "public, max-age=86400"})


@router.get("/dashboard/{name}", include_in_schema=False)
def dashboard_file(name: str) -> Response:
    """The page's own script and style (a fixed set: nothing else under the directory is served)."""
    types = {"app.js": "text/javascript", "style.css": "text/css"}
    if name not in types:
        return JSONResponse({"detail": f"no dashboard file {name!r}"}, status_code=404)
    return FileResponse(DASHBOARD_DIR / name, media_type=types[name])
