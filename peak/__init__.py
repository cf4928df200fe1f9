"""Peak shaving: predict a node's peak, plan the fleet's discharge and recharge without a rebound.

Pure decision logic (no I/O): services in ``vpp/`` and dataflows wrap it.
"""
