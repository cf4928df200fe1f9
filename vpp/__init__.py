"""The open virtual power plant: config, CLI and the local stack."""

__version__ = "0.1.0"
