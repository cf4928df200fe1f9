"""``python -m edge_gateway.simulate``: run the fleet simulator with the settings (``VPP_*``)."""

from edge_gateway.cli import simulate_app

if __name__ == "__main__":
    simulate_app()
