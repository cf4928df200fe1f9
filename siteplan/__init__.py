"""Site plans: the planner a device runs for its owner, and the aggregation of plans through the hierarchies.

Pure decision logic (no I/O): the simulator and the plans dataflow wrap it.
"""
