"""The HTTP API (FastAPI, a router per domain) and the dashboard page it serves."""
