"""The shared core every part builds on: settings, names (topics, Redis keys), rows and clients."""
