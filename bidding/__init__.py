"""The Autobidder: a 5-minute market-bidding workflow as pure state transitions and decisions.

Pure decision logic (no I/O): the orchestrator dataflow, the worker pool and the market adapters wrap it.
"""
