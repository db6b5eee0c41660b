"""ASGI middleware: the request-size limit and request metrics.

FastAPI has no body-size limit of its own. `BodyLimit` refuses a request whose declared
`Content-Length` is over the limit before reading it, and counts the bytes of a streamed
(chunked) body as they arrive, refusing it as soon as it passes the limit; both are a 413.
Plain ASGI rather than Starlette's `BaseHTTPMiddleware`, which costs a task per request.
"""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keel.serving.metrics import ApiMetrics

__all__ = ["BodyLimit", "BodyTooLargeError", "Instrumentation"]


class BodyTooLargeError(Exception):
    """The request body passed the size limit while it was being read."""


def _too_large(limit: int) -> bytes:
    message = f"request body too large: at most {limit} bytes (api.max_body_bytes)"
    return json.dumps({"detail": message}).encode()


class BodyLimit:
    """Refuse request bodies larger than `limit` bytes with 413."""

    def __init__(self, app: ASGIApp, limit: int, on_refused: Any = None) -> None:
        """Wrap `app`; `on_refused()` is called for each refused request."""
        self.app = app
        self.limit = limit
        self.on_refused = on_refused

    async def _refuse(self, send: Send) -> None:
        if self.on_refused is not None:
            self.on_refused()
        body = _too_large(self.limit)
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the declared length, then count the streamed bytes."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.limit:
                    await self._refuse(send)
                    return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLargeError
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLargeError:
            if started:
                raise
            await self._refuse(send)


class Instrumentation:
    """Count requests and time them, labelled by route template (not the raw path)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        """Wrap `app`."""
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Time the request and record its status."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or "unmatched"
            self.metrics.latency.labels(name).observe(time.perf_counter() - start)
            self.metrics.requests.labels(name, scope["method"], str(status)).inc()
            if status >= 500:
                self.metrics.errors.labels("server").inc()
