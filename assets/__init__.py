"""The asset registry: sites and nodes in effective-dated hierarchies (pure core, no I/O)."""
