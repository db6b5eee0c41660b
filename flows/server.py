"""A local Prefect server in the background, for `keel replay`, `make demo` and `keel serve`.

`keel server start` runs `prefect server start` detached (its state, SQLite by default, in
the project's `.keel/prefect`), waits until it answers, and records its process in
`.keel/prefect/server.json`; `keel server stop` stops it. The server runs through
`flows.prefect_server`, which bounds SQLite's lock wait (a minute-long freeze otherwise).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

__all__ = ["ServerError", "running_server", "server_command", "start_server", "stop_server"]


class ServerError(RuntimeError):
    """The server cannot be started; the message says why."""


def _record(root: Path) -> Path:
    return root / ".keel" / "prefect" / "server.json"


def _healthy(api: str) -> bool:
    try:
        return httpx.get(f"{api}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_server(root: Path) -> str | None:
    """The API URL of the server `keel server start` runs for this project, if it runs."""
    record = _record(root)
    if not record.is_file():
        return None
    info = json.loads(record.read_text())
    if _alive(int(info["pid"])) and _healthy(info["api"]):
        return str(info["api"])
    return None


def _port_taken(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def server_command(port: int, host: str = "127.0.0.1") -> list[str]:
    """The command that runs Prefect's server in the foreground (see `flows.prefect_server`)."""
    return [
        sys.executable,
        "-m",
        "flows.prefect_server",
        "server",
        "start",
        "--host",
        host,
        "--port",
        str(port),
    ]


def start_server(root: Path, port: int = 4200, wait: float = 120) -> str:
    """Start the server unless it already runs; return its API URL."""
    api = running_server(root)
    if api:
        return api
    api = f"http://127.0.0.1:{port}/api"
    if _port_taken(port):
        raise ServerError(
            f"port {port} is already in use: stop what runs there, choose another port "
            f"(keel server start --port N), or point PREFECT_API_URL at a running server"
        )
    home = root / ".keel" / "prefect"
    home.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_API_URL": api,
    }
    env.pop("PREFECT_API_URL", None)
    log = (home / "server.log").open("w")
    process = subprocess.Popen(
        server_command(port),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,  # survives the command that started it
    )
    deadline = time.monotonic() + wait
    while not _healthy(api):
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
            raise ServerError(
                f"the Prefect server did not start; its log: {home / 'server.log'}\n"
                + (home / "server.log").read_text()[-1500:]
            )
        time.sleep(0.5)
    _record(root).write_text(json.dumps({"pid": process.pid, "api": api, "port": port}))
    return api


def stop_server(root: Path, wait: float = 30) -> str:
    """Stop the server started for this project; say what happened."""
    record = _record(root)
    if not record.is_file():
        return "no server was started here (nothing to stop)"
    info = json.loads(record.read_text())
    pid = int(info["pid"])
    if _alive(pid):
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + wait
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
    record.unlink()
    return f"stopped the Prefect server at {info['api'].removesuffix('/api')}"
