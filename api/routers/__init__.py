"""One router per domain of the API."""
