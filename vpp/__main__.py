"""``python -m vpp ...``: the CLI, as `vpp up` starts its market feed and forecast service."""

from vpp.cli import app

app(prog_name="vpp")
