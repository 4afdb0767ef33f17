"""Network serving: `stream-s5 serve` (ASGI server + monitoring page), its WebSocket protocol, and the
Python client behind `stream-s5 --server URL`. Talks to the engine only through `StreamPool`."""

__all__ = ["protocol", "server", "client"]
