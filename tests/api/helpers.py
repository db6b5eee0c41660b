"""Helpers of the API tests: JSON records from a frame, a real server on a free port."""

from __future__ import annotations

import math
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
import uvicorn
from fastapi import FastAPI

with warnings.catch_warnings():
    # Starlette 1.x deprecates driving its TestClient with httpx (it wants httpx2, which this
    # project does not install); the client works, and only the import warns.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

__all__ = ["TestClient", "free_port", "running_server", "to_records"]


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    return value


def to_records(frame: pd.DataFrame, columns: list[str], key: str | None = None) -> list[dict]:
    """Rows as JSON-ready dicts (exact floats, null for missing), optionally with the key."""
    wanted = [*columns, key] if key else columns
    return [
        {c: _plain(v) for c, v in zip(wanted, row, strict=True)}
        for row in frame[wanted].itertuples(index=False, name=None)
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_server(app: FastAPI, port: int | None = None) -> Iterator[str]:
    """Serve `app` with uvicorn in a thread; yields its base URL."""
    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
