"""The test side of the zygote (tests/reliability/zygote.py): fork, kill, wait."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


class Zygote:
    """A warm process that forks real children; the test kills them with real signals."""

    def __init__(self, env: dict[str, str], warm: list[Path], log: Path) -> None:
        self.log = log
        self._out = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.zygote", *map(str, warm)],
            cwd=REPO,
            env={**os.environ, **env, "OMP_WAIT_POLICY": "PASSIVE"},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._out,
            text=True,
            bufsize=1,
        )
        ready = self._read()
        assert ready.get("ready"), ready

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the zygote died: {self.log.read_text()[-3000:]}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self._read()

    def fork(
        self,
        job: str,
        args: dict[str, Any],
        log: Path,
        checkpoint: dict[str, Any] | None = None,
        marker: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> int:
        """Start a child running `job`; returns its pid."""
        request = {
            "op": "fork",
            "job": job,
            "args": args,
            "checkpoint": checkpoint,
            "marker": str(marker) if marker else None,
            "log": str(log),
            "env": env or {},
        }
        pid: int = self._ask(request)["pid"]
        return pid

    def wait(self, pid: int, timeout: float) -> dict[str, Any]:
        """How the child ended (or {"status": "running"} after `timeout` seconds)."""
        return self._ask({"op": "wait", "pid": pid, "timeout": timeout})

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError, RuntimeError, json.JSONDecodeError):
            self._ask({"op": "exit"}) if self.process.poll() is None else None
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._out.close()


def wait_for_marker(marker: Path, pid: int, zygote: Zygote, timeout: float) -> str:
    """Poll the marker file until the child reports its checkpoint; '' if it ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if marker.exists() and marker.read_text().strip():
            return marker.read_text().strip().splitlines()[-1]
        status = zygote.wait(pid, 0)
        if status["status"] != "running":
            return ""
        time.sleep(0.02)
    raise AssertionError(f"the child {pid} did not reach its checkpoint in {timeout} s")


def kill(pid: int) -> None:
    """SIGKILL: no handler, no cleanup, no flush; like a power cut for that process."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
