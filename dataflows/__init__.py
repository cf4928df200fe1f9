"""Bytewax flow definitions: wiring only (sources, operators, sinks).

Each module exposes ``flow`` so it runs as ``python -m bytewax.run dataflows.<name>:flow``.
The logic they wire lives in :mod:`operators`.
"""
