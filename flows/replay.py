"""`keel replay`: production, simulated week by week, for several retraining strategies at once.

The replay trains an initial champion on what was known at the start, then walks simulated
time. At each step every strategy runs the real flows with `as_of` set to the simulated date:
`outcomes` (the truths known by then), `score` (the records made in the step, before their
outcome is known; at the first step every record still open) and `monitor`.

- `static` never retrains.
- `scheduled` runs its retrain deployment every `replay.scheduled_every_steps` steps.
- `keel` retrains only through the event path: `monitor` emits `keel.drift.detected` or
  `keel.performance.degraded`, the automation starts the retrain deployment, and the gate
  decides whether the challenger replaces the champion. The replay waits for a triggered
  retraining to finish before it moves on, so a run is deterministic.

Each strategy is a project of its own under `.keel/replay/<strategy>/` and runs in its own
process (the two cores are shared); the retrain deployments are served by a `keel serve`
process for the replay. Every flow run is visible in the Prefect UI while the replay runs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import multiprocessing
import os
import queue
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import flow, tags
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.exceptions import ObjectNotFound
from prefect.logging import get_logger, get_run_logger
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

from flows.production import (
    monitor_flow,
    outcomes_flow,
    params_for_retrain,
    retrain_flow,
    score_flow,
)
from keel.config import Params, load_params
from keel.layout import STAGES
from keel.replay import StrategyResult, check_targets, render_chart, render_html, replay_steps
from keel.table import LABEL_TIME
from tasks import stages
from tasks.io import write_json, write_text
from tasks.production import load_records
from tasks.replay import collect_strategy, drift_series, prepare_strategy, seed_champion

__all__ = ["ReplayError", "bootstrap_flow", "report_flow", "run_replay"]

REPORT_DIR = Path("reports/replay")
EVERYTHING_OPEN = dt.datetime(1900, 1, 1, tzinfo=dt.UTC)
Progress = Callable[[str, int, int, str], None]


class ReplayError(RuntimeError):
    """The replay cannot go on; the message says why and what to do."""


def deployment_name(strategy: str) -> str:
    """The retrain deployment that serves one strategy of the replay."""
    return f"replay-{strategy}"


@flow(name="replay-bootstrap")
def bootstrap_flow(project: str, params_file: str, as_of: dt.datetime, roots: list[str]) -> int:
    """Train the initial champion on what was known at `as_of` and seed every strategy with it.

    The model is trained once (the strategies would train byte-identical models) and
    registered as the first champion in each strategy's own registry.
    """
    params = load_params(Path(project) / params_file)
    first = Path(roots[0])
    workdir = first.parent / "bootstrap"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    training = params_for_retrain(params, Path(project), as_of)
    for stage in STAGES:
        getattr(stages, stage)(workdir, training)
    version = 0
    for root in map(Path, roots):
        own = params_for_retrain(load_params(root / "params.yaml"), root, as_of)
        version = seed_champion(workdir, root, own, as_of)
    get_run_logger().info("initial champion trained as of %s for %d strategies", as_of, len(roots))
    return version


def _clear_stale_runs(names: list[str]) -> int:
    """Delete runs of the replay's deployments that an earlier replay left waiting.

    Left alone, the runner would pick them up and retrain this replay's state at a date of
    the earlier one.
    """
    cleared = 0
    with get_client(sync_client=True) as client:
        for name in names:
            try:
                deployment = client.read_deployment_by_name(name)
            except ObjectNotFound:
                continue
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
            )
            for run in runs:
                if run.state is None or not run.state.is_final():
                    client.delete_flow_run(run.id)
                    cleared += 1
    return cleared


def _drain_runs(names: list[str], expected: int, wait: float = 120) -> None:
    """Let every run the automation started finish before the serve process stops.

    `expected` is how many runs the replay's events must have started (one per step whose
    events were labelled "due"). The replay waited for each of them; this catches a run a
    racing event started (one the cooldown check in the flow then skips).
    """
    deadline = time.monotonic() + wait
    with get_client(sync_client=True) as client:
        ids = [client.read_deployment_by_name(name).id for name in names]
        while True:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=ids))
            )
            if len(runs) >= expected and all(r.state and r.state.is_final() for r in runs):
                return
            if time.monotonic() > deadline:
                # The figures are complete (the strategies are done): say so, do not fail.
                get_logger("keel.replay").warning(
                    "the retrain deployments have %d runs of the %d that the replay's events "
                    "should have started, or some did not finish, after %.0f s; see the serve "
                    "log under .keel/replay",
                    len(runs),
                    expected,
                    wait,
                )
                return
            time.sleep(1)


def _await_triggered_retraining(
    deployment: str, as_of: str, since: dt.datetime, wait: float
) -> str:
    """Wait for the retraining run the automation starts for the events as of `as_of`.

    Only runs created after `since` (when the monitor that emitted the events began) count.
    """
    deadline = time.monotonic() + wait
    with get_client(sync_client=True) as client:
        target = client.read_deployment_by_name(deployment)
        run = None
        while run is None or not (run.state and run.state.is_final()):
            if run is None and time.monotonic() > deadline:
                raise ReplayError(
                    f"no retraining was started for the events as of {as_of} within {wait:.0f} s:"
                    " is the replay's `keel serve` process running and the Prefect server's"
                    " event system (automations) on?"
                )
            time.sleep(0.5)
            if run is None:
                runs = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[target.id]))
                )
                run = next(
                    (
                        r
                        for r in runs
                        if r.parameters.get("as_of") == as_of and r.created and r.created >= since
                    ),
                    None,
                )
            else:
                run = client.read_flow_run(run.id)
        if not run.state.is_completed():
            raise ReplayError(
                f"the retraining as of {as_of} ended {run.state.name}: {run.state.message}"
            )
        return str(run.state.name)


def _strategy_worker(job: dict[str, Any], progress: Any) -> None:
    """Run one strategy's steps (in its own process); report each step on `progress`."""
    strategy, root = job["strategy"], job["root"]
    steps = [dt.datetime.fromisoformat(s) for s in job["steps"]]
    parent = os.getppid()
    try:
        last_event = 0.0
        event_steps = 0
        # No heartbeat thread per flow run: its end waits out a 1 s sleep, which made each of
        # the replay's ~190 short flow runs per strategy take a second longer than its work.
        # (Heartbeats detect crashed runs; this process reports its own failures.)
        no_heartbeat = temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})
        with no_heartbeat, tags("keel-replay", f"strategy:{strategy}"):
            for index, when in enumerate(steps):
                if os.getppid() != parent:  # the replay was killed: do not go on alone
                    raise ReplayError("the replay process is gone")
                day = when.date().isoformat()
                outcomes_flow.with_options(flow_run_name=f"{strategy} outcomes {day}")(
                    root=root, as_of=when
                )
                scored = score_flow.with_options(flow_run_name=f"{strategy} score {day}")(
                    root=root, as_of=when, since=EVERYTHING_OPEN if index == 0 else None
                )
                # The automation ignores events for one second after it fires.
                time.sleep(max(0.0, last_event + 1.5 - time.monotonic()))
                monitored = dt.datetime.now(dt.UTC)
                result = monitor_flow.with_options(flow_run_name=f"{strategy} monitor {day}")(
                    root=root, as_of=when
                )
                note = f"{day}: scored {scored['written']}"
                if strategy == "keel" and (result["drifted"] or result["degraded"]):
                    if result["retrain"] != "due":
                        # Labelled "cooldown": the automation starts no run for them.
                        note += "; events (cooldown: no retraining)"
                        progress.put(("step", strategy, index + 1, note))
                        continue
                    last_event = time.monotonic()
                    event_steps += 1
                    ended = _await_triggered_retraining(
                        f"retrain/{deployment_name(strategy)}",
                        result["as_of"],
                        monitored,
                        job["event_wait"],
                    )
                    note += f"; events -> retraining {ended}"
                elif strategy == "scheduled" and index and index % job["every"] == 0:
                    # On its calendar: the retrain flow itself, in this process.
                    retrained = retrain_flow.with_options(
                        flow_run_name=f"{strategy} retrain {day}"
                    )(root=root, as_of=when, reason="scheduled")
                    note += f"; scheduled retraining: {retrained['status']}"
                progress.put(("step", strategy, index + 1, note))
            outcomes_flow.with_options(flow_run_name=f"{strategy} outcomes final")(
                root=root, as_of=dt.datetime.fromisoformat(job["final"])
            )
        progress.put(("events", strategy, event_steps, ""))
        progress.put(("done", strategy, len(steps), "done"))
    except BaseException as exc:
        message = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        progress.put(("error", strategy, 0, f"{message}\n{traceback.format_exc()}"))
        raise SystemExit(1) from None


@contextlib.contextmanager
def _served(state: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Serve the replay's retrain deployments from a `keel serve` process while in the block."""
    env = {
        **os.environ,
        "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "INFO",
        # Look for triggered runs every second (default 10 s): the replay waits for them.
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
    }
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "serve-replay", str(state)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGINT)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


def _wait_for_deployments(
    names: list[str], process: subprocess.Popen[bytes], log: Path, wait: float = 120
) -> None:
    deadline = time.monotonic() + wait
    with get_client(sync_client=True) as client:
        while True:
            if process.poll() is not None:
                raise ReplayError(f"the replay's serve process exited: {log.read_text()[-2000:]}")
            try:
                for name in names:
                    client.read_deployment_by_name(name)
                return
            except Exception:  # not registered yet
                if time.monotonic() > deadline:
                    raise ReplayError(
                        f"the retrain deployments were not served within {wait:.0f} s; see {log}"
                    ) from None
                time.sleep(1)


def _run_workers(
    jobs: list[dict[str, Any]], total: int, on_progress: Progress | None
) -> dict[str, int]:
    """Run every strategy in its own process; returns how many steps of each emitted events."""
    context = multiprocessing.get_context("spawn")
    updates = context.Queue()
    env = {**os.environ}
    os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "WARNING"
    workers = [
        context.Process(target=_strategy_worker, args=(job, updates), name=job["strategy"])
        for job in jobs
    ]
    try:
        for worker in workers:
            worker.start()
    finally:
        os.environ.clear()
        os.environ.update(env)
    remaining = {job["strategy"] for job in jobs}
    events: dict[str, int] = {}
    try:
        while remaining:
            try:
                kind, strategy, step, note = updates.get(timeout=5)
            except queue.Empty:
                dead = [w.name for w in workers if w.name in remaining and not w.is_alive()]
                if dead:
                    raise ReplayError(f"strategy process {dead} died without a report") from None
                continue
            if kind == "error":
                raise ReplayError(f"strategy '{strategy}' failed: {note}")
            if kind == "events":
                events[strategy] = step
                continue
            if kind == "done":
                remaining.discard(strategy)
            if on_progress is not None:
                on_progress(strategy, step, total, note)
    finally:
        for worker in workers:
            if worker.is_alive() and remaining:
                worker.terminate()
            worker.join(30)
    return events


def run_replay(
    project: Path,
    params_file: str,
    params: Params,
    on_progress: Progress | None = None,
) -> dict[str, Any]:
    """Run the whole replay and write its report; returns the summary.

    Args:
        project: The project folder.
        params_file: Its params file, relative to `project`.
        params: The params, with `replay` set (start, end, step, strategies).
        on_progress: Called as (strategy, step, steps, note) after every step.
    """
    cfg = params.replay
    if cfg.start is None or cfg.end is None:
        raise ReplayError("replay.start and replay.end are needed (params or --start/--end)")
    _interrupt_on_sigterm()
    started = time.monotonic()
    steps = replay_steps(cfg.start, cfg.end, cfg.step_days)
    state = project / ".keel" / "replay"
    shutil.rmtree(state, ignore_errors=True)
    roots = [prepare_strategy(state, project, params, s) for s in cfg.strategies]
    # Batches are the same for every strategy: validate each once (the results are cached by
    # a fingerprint of suite and data).
    os.environ["KEEL_CACHE_DIR"] = str(state / "cache")
    bootstrap_flow(str(project), params_file, steps[0], [str(r) for r in roots])
    final = _final_outcomes_date(project, params)
    jobs = [
        {
            "strategy": strategy,
            "root": str(root),
            "steps": [s.isoformat() for s in steps],
            "every": cfg.scheduled_every_steps,
            "event_wait": cfg.event_wait_seconds,
            "final": final.isoformat(),
        }
        for strategy, root in zip(cfg.strategies, roots, strict=True)
    ]
    served = [f"retrain/{deployment_name(s)}" for s in cfg.strategies if s == "keel"]
    log = state / "serve.log"
    if served:
        _clear_stale_runs(served)
        with _served(state, log) as process:
            _wait_for_deployments(served, process, log)
            events = _run_workers(jobs, len(steps), on_progress)
            _drain_runs(served, sum(events.values()))
    else:
        _run_workers(jobs, len(steps), on_progress)
    return report_flow(
        str(project),
        params_file,
        [str(r) for r in roots],
        list(cfg.strategies),
        cfg.start,
        cfg.end,
        cfg.step_days,
        time.monotonic() - started,
    )


def _interrupt_on_sigterm() -> None:
    """A SIGTERM stops the replay like Ctrl-C: workers and the serve process are stopped."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
        signal.signal(signal.SIGTERM, interrupt)


def _final_outcomes_date(project: Path, params: Params) -> dt.datetime:
    """When the last outcome in the source became known: the replay records every outcome."""
    last = load_records(project, params)[LABEL_TIME].max()
    return dt.datetime.combine(last.date(), dt.time(), tzinfo=dt.UTC) + dt.timedelta(days=1)


@flow(name="replay-report")
def report_flow(
    project: str,
    params_file: str,
    roots: list[str],
    strategies: list[str],
    start: dt.date,
    end: dt.date,
    step_days: int,
    wall_seconds: float,
) -> dict[str, Any]:
    """Compare the strategies by month; write summary.json, report.html and chart.png.

    The same summary is published as Prefect artifacts (a markdown report and a table).
    """
    project_path = Path(project)
    params = load_params(project_path / params_file)
    cfg = params.replay.model_copy(update={"start": start, "end": end, "step_days": step_days})
    results: dict[str, StrategyResult] = {}
    own_params = {}
    for strategy, root in zip(strategies, map(Path, roots), strict=True):
        own_params[strategy] = load_params(root / "params.yaml")
        results[strategy] = collect_strategy(root, own_params[strategy], strategy, start, end)
    reference = "static" if "static" in results else strategies[0]
    drift = drift_series(Path(roots[strategies.index(reference)]), own_params[reference], top=5)
    checks = check_targets(results, cfg.targets)
    ui = _ui_url()
    summary = {
        "start": str(cfg.start),
        "end": str(cfg.end),
        "step_days": cfg.step_days,
        "month_by": params.data.split_time or params.data.event_time or "",
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "wall_seconds": round(wall_seconds, 1),
        "strategies": {name: r.to_json() for name, r in results.items()},
        "targets": [asdict(c) for c in checks],
        "top_drifting_features": {f: points for f, points in drift.items()},
    }
    out = project_path / REPORT_DIR
    write_json(out / "summary.json", summary)
    render_chart(results, drift, out / "chart.png", f"Keel replay {cfg.start} to {cfg.end}")
    write_text(out / "report.html", render_html(summary, checks, "chart.png", ui))
    create_markdown_artifact(
        key="replay-report", markdown=_markdown(summary, checks), description="Keel replay"
    )
    create_table_artifact(
        key="replay-months",
        table=[
            {"strategy": name, **{k: v for k, v in asdict(m).items()}}
            for name, r in results.items()
            for m in r.months
        ],
        description="Accuracy per strategy and month",
    )
    return {**summary, "report_dir": str(out)}


def _ui_url() -> str | None:
    from prefect.settings import PREFECT_API_URL

    api = PREFECT_API_URL.value()
    return api.removesuffix("/api") if api else None


def _markdown(summary: dict[str, Any], checks: list[Any]) -> str:
    lines = [f"# Keel replay {summary['start']} to {summary['end']}", ""]
    lines += ["| strategy | mean AUC | worst month | retrainings | promotions | rejections |"]
    lines += ["|---|---|---|---|---|---|"]
    for name, s in summary["strategies"].items():
        lines.append(
            f"| {name} | {_num(s['mean_auc'])} | {_num(s['min_auc'])} | {s['retrain_count']} "
            f"| {len(s['promotions'])} | {len(s['rejections'])} |"
        )
    lines += ["", "| target | wanted | measured | |", "|---|---|---|---|"]
    lines += [
        f"| {c.name} | {c.target} | {c.measured} | {'holds' if c.holds else '**missed**'} |"
        for c in checks
    ]
    return "\n".join(lines) + "\n"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def load_summary(project: Path) -> dict[str, Any]:
    """The summary written by the last replay."""
    return dict(json.loads((project / REPORT_DIR / "summary.json").read_text()))
