# syntax=docker/dockerfile:1
# One image for every role of the platform (gateway, API, dataflows, DDL job); the Kubernetes
# objects differ only in their command. Build: docker build -t vpp:<tag> .
#
# The install mirrors the README / scripts/bootstrap.sh (`python -m venv .venv` then
# `pip install -e .[dev,local]`): a venv, then the project from pyproject.toml with pip, here
# non-editable and without the dev and local extras (the local extra is the embedded broker,
# redis-server and chDB; production uses real services). tests/k8s/test_dockerfile.py keeps the
# two in step.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# pyproject.toml names README.md as the readme, so the build needs it too.
COPY pyproject.toml README.md ./
# Every top-level package of [tool.setuptools.packages.find] include.
COPY core ./core
COPY forecast ./forecast
COPY peak ./peak
COPY bidding ./bidding
COPY siteplan ./siteplan
COPY vpp ./vpp
COPY assets ./assets
COPY bench ./bench
COPY schemas ./schemas
COPY dataflows ./dataflows
COPY operators ./operators
COPY edge_gateway ./edge_gateway
COPY api ./api
# The console's one third-party asset, plotly.js, taken out of the plotly wheel (the same pin as the
# dev extra) into the api package's dashboard files; the 70 MB Python package itself is not installed.
RUN python -m pip download --no-deps --dest /tmp/plotly "plotly>=5.20,<7" \
    && python -m zipfile -e /tmp/plotly/plotly-*.whl /tmp/plotly/wheel \
    && cp /tmp/plotly/wheel/plotly/package_data/plotly.min.js api/dashboard/plotly.min.js \
    && rm -rf /tmp/plotly
RUN python -m pip install --upgrade pip \
    && python -m pip install .

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 vpp \
    && useradd --system --uid 10001 --gid vpp --home-dir /app --no-create-home --shell /usr/sbin/nologin vpp
COPY --from=build /opt/venv /opt/venv
COPY --chmod=0755 deploy/run-dataflow.sh /usr/local/bin/run-dataflow.sh
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VPP_DATA_DIR=/tmp/vpp
WORKDIR /app
USER 10001:10001
# WebSocket gateway, gateway health/metrics, API, Bytewax cluster, Bytewax metrics.
EXPOSE 8765 9108 8000 2101 3030
CMD ["vpp", "--help"]
