"""Reusable stateful logic for the dataflows: twin state machine, rollups, windows,
disaggregation, error correction, and the sinks to Redis and ClickHouse."""
