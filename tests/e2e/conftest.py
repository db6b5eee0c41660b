"""A real Prefect server for end-to-end tests: what `keel server start` runs, on a free port."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from flows.server import server_command


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_server(tmp_path: Path, **overrides: str) -> Iterator[dict[str, str]]:
    """Run `keel server start`'s command on a free port with a temporary PREFECT_HOME (and the
    environment `overrides`); yield the environment of a process that uses it."""
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        **overrides,
    }
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            server_command(port),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"{env['PREFECT_API_URL']}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"prefect server did not start: {log_path.read_text()[-3000:]}")
                time.sleep(0.5)
            yield env
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)


@pytest.fixture()
def prefect_server(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A real server (SQLite, as `keel server start` runs it); yield the environment."""
    with running_server(tmp_path) as env:
        yield env


def api(env: dict[str, str], path: str, body: dict[str, object]) -> list[dict[str, object]]:
    """POST a filter query to the server's REST API."""
    response = httpx.post(f"{env['PREFECT_API_URL']}{path}", json=body, timeout=10)
    response.raise_for_status()
    result: list[dict[str, object]] = response.json()
    return result


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `predicate` every second; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(1)
    pytest.fail(f"timed out waiting for {what}")
