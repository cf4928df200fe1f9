"""``python -m edge_gateway``: run one gateway instance with the settings (``VPP_*``)."""

from edge_gateway.cli import gateway_app

if __name__ == "__main__":
    gateway_app()
