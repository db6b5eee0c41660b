"""Served predictions go to the prediction store, off the request path.

A request only puts its predictions on a bounded queue. A background thread takes what has
queued every `flush_seconds` and writes it through the store's own bulk path
(`keel.store.write_batch`) as batches of their own, `api:<model>@<time>-<id>`, which never
collide with the `score` flow's `<model>@<as_of>` batches. Each prediction's `as_of` is the
time it was served, so the `monitor` flow, which selects predictions by model name and time,
watches served predictions exactly like batch ones. A record sent twice within one flush goes
to two batches (a batch holds a key once). When the queue is full or the database stays away,
predictions are dropped and counted, never allowed to slow or fail a request.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy import Engine

from keel.store import ScoreBatch, write_batch

__all__ = ["PredictionRecorder", "ServedPrediction", "api_batch_id"]

log = logging.getLogger(__name__)

_ATTEMPTS = 3


@dataclass(frozen=True)
class ServedPrediction:
    """One served prediction, as it will be stored."""

    model_name: str
    model_version: int
    entity_key: str
    score: float
    decision: int
    reasons: list[dict[str, Any]]
    scored_at: dt.datetime


def api_batch_id(model_name: str, at: dt.datetime) -> str:
    """A unique batch id for served predictions (fits the store's 120 characters)."""
    stamp = at.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"api:{model_name[:80]}@{stamp}-{uuid.uuid4().hex[:8]}"


def _batches(items: list[ServedPrediction]) -> Iterable[list[ServedPrediction]]:
    """Split into batches of one model version with each entity key at most once."""
    groups: dict[tuple[str, int, int], list[ServedPrediction]] = {}
    seen: dict[tuple[str, int, str], int] = {}
    for item in items:
        occurrence = seen.get((item.model_name, item.model_version, item.entity_key), 0)
        seen[(item.model_name, item.model_version, item.entity_key)] = occurrence + 1
        groups.setdefault((item.model_name, item.model_version, occurrence), []).append(item)
    return groups.values()


class PredictionRecorder:
    """A bounded queue and a writer thread that stores served predictions in batches."""

    def __init__(
        self,
        engine: Engine,
        *,
        flush_seconds: float = 1.0,
        max_queued: int = 100_000,
        on_written: Callable[[int], None] | None = None,
        on_dropped: Callable[[int], None] | None = None,
    ) -> None:
        """Create the recorder (call `start` to begin writing).

        Args:
            engine: The prediction store's database.
            flush_seconds: How often queued predictions are written.
            max_queued: Predictions that may wait; beyond, new ones are dropped.
            on_written: Called with the number of predictions written.
            on_dropped: Called with the number of predictions dropped.
        """
        self._engine = engine
        self._flush_seconds = flush_seconds
        self._queue: queue.Queue[ServedPrediction] = queue.Queue(maxsize=max_queued)
        self._on_written = on_written
        self._on_dropped = on_dropped
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._idle = threading.Condition()
        self._busy = False

    def submit(self, predictions: list[ServedPrediction]) -> None:
        """Queue predictions for writing; never blocks (drops and counts when full)."""
        dropped = 0
        for item in predictions:
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                dropped += 1
        if dropped:
            log.warning("prediction log queue full: %d served predictions not stored", dropped)
            if self._on_dropped is not None:
                self._on_dropped(dropped)

    def start(self) -> None:
        """Start the writer thread."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name="keel-prediction-log", daemon=True
            )
            self._thread.start()

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop the writer."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None
        self.flush()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is written (for tests and shutdown)."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._busy or not self._queue.empty():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(min(remaining, 0.05))
        return True

    def _run(self) -> None:
        while not self._stop.wait(self._flush_seconds):
            self.flush()

    def flush(self) -> int:
        """Write everything queued now; returns how many predictions were written."""
        with self._idle:
            self._busy = True
        try:
            items: list[ServedPrediction] = []
            while True:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            written = 0
            for batch in _batches(items):
                written += self._write(batch)
            return written
        finally:
            with self._idle:
                self._busy = False
                self._idle.notify_all()

    def _write(self, items: list[ServedPrediction]) -> int:
        first = items[0]
        now = dt.datetime.now(dt.UTC)
        batch_id = api_batch_id(first.model_name, now)
        frame = pd.DataFrame(
            {
                "batch_id": batch_id,
                "entity_key": [p.entity_key for p in items],
                "as_of": [p.scored_at for p in items],
                "model_name": first.model_name,
                "model_version": first.model_version,
                "score": [p.score for p in items],
                "decision": [p.decision for p in items],
                "reasons": [p.reasons for p in items],
                "scored_at": [p.scored_at for p in items],
            }
        )
        for attempt in range(1, _ATTEMPTS + 1):
            row = ScoreBatch(
                batch_id=batch_id,
                model_name=first.model_name,
                model_version=first.model_version,
                as_of=max(p.scored_at for p in items),
                rows=len(items),
                quarantined=0,
            )
            try:
                with self._engine.begin() as connection:
                    write_batch(connection, row, frame)
            except Exception as exc:  # the store may be busy or away: retry, then drop
                if attempt == _ATTEMPTS:
                    log.error(
                        "cannot store %d served predictions (batch %s): %s",
                        len(items),
                        batch_id,
                        exc,
                    )
                    if self._on_dropped is not None:
                        self._on_dropped(len(items))
                    return 0
                time.sleep(0.5 * 2 ** (attempt - 1))
                continue
            if self._on_written is not None:
                self._on_written(len(items))
            return len(items)
        return 0  # pragma: no cover - the loop always returns
