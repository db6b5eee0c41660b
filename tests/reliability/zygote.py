"""A warm parent for the fault-injection tests: imports Keel once, then forks real processes.

Starting a Python process that imports Prefect, XGBoost, pandas and Great Expectations takes
5 to 10 seconds on 2 busy cores; 20 killed scoring runs would spend minutes on imports alone.
This process imports everything once and forks a child per run: each child is a real process
with its own pid, killed by the test with a real SIGKILL. Nothing Prefect-related has started
in this parent before it forks (no client, no thread), so each child starts it afresh.

Protocol, one JSON object per line on stdin, one answer per line on stdout:
    {"op": "fork", "job": ..., "args": {...}, "checkpoint": ..., "marker": PATH, "log": PATH}
        -> {"pid": PID}
    {"op": "wait", "pid": PID, "timeout": SECONDS}
        -> {"status": "exited", "code": N} | {"status": "killed", "signal": N}
           | {"status": "running"}
    {"op": "exit"}

Checkpoints: a child reaching its checkpoint's `hit`-th occurrence appends `<name> <hit>` to
the marker file and then either waits there to be killed (`pause`), or runs on (the test then
kills it after a random delay: a kill at a random point of what follows).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before anything loads OpenMP

import contextlib
import datetime as dt
import functools
import json
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import sqlalchemy.orm

import flows.cli
import flows.production
import flows.train
import keel.registry.repository
import keel.registry.store
import keel.store
import tasks.engine
import tasks.production
import tasks.registry
import tasks.stages
from keel.config import load_params


class _Checkpoint:
    def __init__(self, spec: dict[str, Any], marker: Path) -> None:
        self.name: str = spec["name"]
        self.hit: int = spec.get("hit", 1)
        self.pause: bool = spec.get("pause", True)
        self.marker = marker
        self.seen = 0

    def reached(self) -> None:
        self.seen += 1
        if self.seen != self.hit:
            return
        with self.marker.open("a") as out:
            out.write(f"{self.name} {self.hit}\n")
            out.flush()
            os.fsync(out.fileno())
        if self.pause:
            while True:  # wait here for the SIGKILL
                time.sleep(60)


def _before(owner: Any, attribute: str, checkpoint: _Checkpoint) -> None:
    real = getattr(owner, attribute)

    @functools.wraps(real)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        checkpoint.reached()
        return real(*args, **kwargs)

    setattr(owner, attribute, wrapper)


def _after(owner: Any, attribute: str, checkpoint: _Checkpoint) -> None:
    real = getattr(owner, attribute)

    @functools.wraps(real)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        checkpoint.reached()
        return result

    setattr(owner, attribute, wrapper)


def _half_then(checkpoint: _Checkpoint) -> None:
    real = keel.store._insert_sqlite

    def insert(connection: Any, rows: Any) -> None:
        rows = list(rows)
        real(connection, rows[: len(rows) // 2])  # half the batch is inside the transaction
        checkpoint.reached()
        real(connection, rows[len(rows) // 2 :])

    keel.store._insert_sqlite = insert


def _after_first_chunk(checkpoint: _Checkpoint) -> None:
    real = tasks.engine.iter_scored

    def iter_scored(*args: Any, **kwargs: Any) -> Iterator[Any]:
        for chunk in real(*args, **kwargs):
            checkpoint.reached()  # scored, not yet spooled
            yield chunk

    tasks.engine.iter_scored = iter_scored  # type: ignore[assignment]


# Where each checkpoint is, in the order a run passes them.
INSTALL: dict[str, Callable[[_Checkpoint], None]] = {
    # scoring
    "open-registry": lambda c: _before(tasks.production, "open_registry", c),
    "validate-batch": lambda c: _before(tasks.production, "validate_batch", c),
    "load-model": lambda c: _before(tasks.production, "load_bundle", c),
    "scored-chunk": _after_first_chunk,
    "write-begun": lambda c: _before(tasks.production, "write_batch", c),
    "half-inserted": _half_then,
    "before-commit": lambda c: _after(tasks.production, "write_batch", c),
    "after-commit": lambda c: _before(tasks.production, "ScoreResult", c),
    # training
    "validate-stage": lambda c: _before(tasks.stages, "validate_frame", c),
    "fit": lambda c: _before(tasks.engine, "train_model", c),
    "bundle-half-written": lambda c: _before(tasks.stages, "write_text", c),
    "object-before-rename": lambda c: _before(keel.registry.store.ArtifactStore, "_commit", c),
    "before-registry-commit": lambda c: _before(sqlalchemy.orm.SessionTransaction, "commit", c),
    "gate-deciding": lambda c: _before(tasks.registry, "decide_promotion", c),
}


def _score(args: dict[str, Any], checkpoint: _Checkpoint | None) -> None:
    for as_of in args["as_ofs"]:
        flows.production.score_flow(root=args["root"], as_of=dt.datetime.fromisoformat(as_of))
        if checkpoint is not None and checkpoint.name == "between-flows":
            checkpoint.reached()


def _train(args: dict[str, Any], checkpoint: _Checkpoint | None) -> None:
    flows.train.train_flow(root=args["root"])


def _promote(args: dict[str, Any], checkpoint: _Checkpoint | None) -> None:
    go = Path(args["go"])
    while not go.exists():  # a barrier: every process promotes at the same moment
        time.sleep(0.005)
    flows.cli.app(
        [
            "models",
            "promote",
            str(args["version"]),
            "--reason",
            args["reason"],
            "--params",
            args["params"],
        ],
        standalone_mode=False,
    )


JOBS: dict[str, Callable[[dict[str, Any], _Checkpoint | None], None]] = {
    "score": _score,
    "train": _train,
    "promote": _promote,
}


def _child(request: dict[str, Any]) -> None:
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    checkpoint = None
    if request.get("checkpoint"):
        checkpoint = _Checkpoint(request["checkpoint"], Path(request["marker"]))
        install = INSTALL.get(checkpoint.name)
        if install is not None:
            install(checkpoint)
    env = request.get("env") or {}
    os.environ.update(env)
    code = 0
    try:
        JOBS[request["job"]](request["args"], checkpoint)
    except BaseException:
        traceback.print_exc()
        code = 1
    with contextlib.suppress(Exception):
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _wait(pid: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            if os.WIFSIGNALED(status):
                return {"status": "killed", "signal": os.WTERMSIG(status)}
            return {"status": "exited", "code": os.WEXITSTATUS(status)}
        if time.monotonic() > deadline:
            return {"status": "running"}
        time.sleep(0.02)


def main() -> None:
    # Warm the per-process caches children inherit (the source feed of each project).
    for root in sys.argv[1:]:
        tasks.production.load_records(Path(root), load_params(Path(root) / "params.yaml"))
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "exit":
            break
        if request["op"] == "fork":
            pid = os.fork()
            if pid == 0:
                _child(request)
            answer: dict[str, Any] = {"pid": pid}
        else:
            answer = _wait(request["pid"], request.get("timeout", 0))
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
