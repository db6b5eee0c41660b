"""The `keel` command line: the composition root of Keel.

Examples:
    keel train                      # run the pipeline as a Prefect flow (stale stages only)
    keel train --force              # run every stage
    keel stage featurize            # one stage, as `dvc repro` calls it
    dvc repro                       # the same pipeline through DVC
"""

from __future__ import annotations

import os

# XGBoost's OpenMP threads spin while they wait by default; with several Keel processes on a
# few cores (a replay's strategies, a served retraining, the API) spinning threads starve the
# working ones (a training measured 20 times slower). Sleep instead. Read once, when OpenMP
# loads, so it is set before anything imports xgboost.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import datetime
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from flows.models import app as models_app
from keel.layout import STAGES

if TYPE_CHECKING:
    from keel.config import Params

app = typer.Typer(
    name="keel",
    help=(
        "Keel keeps a production model accurate over time.\n\n"
        "Examples:\n\n"
        "  keel train                 run the training pipeline as a Prefect flow\n\n"
        "  keel stage validate        run one pipeline stage (what dvc.yaml calls)\n\n"
        "  keel models list           registered versions, champion and challenger\n\n"
        "  dvc repro                  run the stale stages through DVC"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
stage_app = typer.Typer(
    help="Run one pipeline stage (what `dvc repro` calls).", no_args_is_help=True
)
app.add_typer(stage_app, name="stage")
app.add_typer(models_app, name="models")


ParamsOption = Annotated[
    Path,
    typer.Option(
        "--params",
        "-p",
        help="The params file; its folder is the project root.",
        dir_okay=False,
    ),
]


def _configure_environment(root: Path) -> None:
    """Keep Prefect's state inside the project and offline (before Prefect is imported)."""
    home = Path(os.environ.setdefault("PREFECT_HOME", str(root / ".keel" / "prefect")))
    home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_BATCH_INTERVAL", "0.5")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _known_errors() -> tuple[type[Exception], ...]:
    from keel.config import ConfigError
    from keel.expressions import ExpressionError
    from keel.features import FeatureError
    from keel.splits import SplitError
    from keel.table import SourceError
    from keel.validation import DataValidationError
    from tasks.stages import StageError

    return (
        ConfigError,
        ExpressionError,
        FeatureError,
        SplitError,
        SourceError,
        DataValidationError,
        StageError,
    )


def _run_stage(name: str, params_path: Path) -> None:
    root = params_path.resolve().parent
    _configure_environment(root)
    from keel.config import load_params
    from tasks import stages

    errors = _known_errors()
    try:
        params = load_params(params_path.resolve())
        summary = getattr(stages, name).fn(root, params)
    except errors as exc:
        _fail(f"stage '{name}' failed: {exc}")
    typer.echo(json.dumps(summary, default=str, indent=2))


def _stage_command(name: str) -> None:
    def command(params: ParamsOption = Path("params.yaml")) -> None:
        _run_stage(name, params)

    command.__doc__ = f"Run the '{name}' stage."
    stage_app.command(name)(command)


for _stage in STAGES:
    _stage_command(_stage)


@app.command()
def train(
    params: ParamsOption = Path("params.yaml"),
    force: Annotated[bool, typer.Option(help="Run every stage, even up-to-date ones.")] = False,
) -> None:
    """Run the training pipeline as one Prefect flow.

    DVC decides which stages are stale; Prefect runs them with logs and publishes a model card
    artifact. Uses PREFECT_API_URL when set, else a temporary local Prefect server.

    Examples:
        keel train
        keel train --force
        PREFECT_API_URL=http://127.0.0.1:4200/api keel train
    """
    root = params.resolve().parent
    _configure_environment(root)
    from flows.train import train_flow

    errors = _known_errors()
    try:
        result = train_flow(root=str(root), params_file=params.name, force=force)
    except errors as exc:
        _fail(str(exc))
    typer.echo(f"stages run: {', '.join(result['ran']) or 'none (all up to date)'}")
    for key, value in result["metrics"].items():
        typer.echo(f"  {key:>24}: {value:.4f}")
    decision = result["decision"]
    if decision is None:
        typer.echo(f"model unchanged: already registered as version {result['version']}")
    else:
        typer.echo(f"registered version {result['version']}: {decision['summary']}")


AsOfOption = Annotated[
    datetime.datetime | None,
    typer.Option(
        "--as-of",
        help="Logical date (ISO, UTC), e.g. 2016-09-05. Default: now.",
        formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"],
    ),
]


def _run_production(flow_name: str, params: Path, as_of: datetime.datetime | None) -> None:
    root = params.resolve().parent
    _configure_environment(root)
    from flows import production
    from keel.db import DatabaseUnavailableError
    from keel.registry.store import ArtifactError
    from tasks.production import BatchRejectedError

    errors: tuple[type[Exception], ...] = (
        *_known_errors(),
        DatabaseUnavailableError,
        ArtifactError,
        BatchRejectedError,
    )
    flow_fn = getattr(production, f"{flow_name}_flow")
    try:
        result = flow_fn(root=str(root), params_file=params.name, as_of=as_of)
    except errors as exc:
        _fail(str(exc))
    typer.echo(json.dumps(result, indent=2, default=str))


@app.command()
def score(params: ParamsOption = Path("params.yaml"), as_of: AsOfOption = None) -> None:
    """Score the records made in the period ending at --as-of with the champion.

    Examples:
        keel score --as-of 2016-09-05
    """
    _run_production("score", params, as_of)


@app.command()
def outcomes(params: ParamsOption = Path("params.yaml"), as_of: AsOfOption = None) -> None:
    """Record the outcomes known by --as-of.

    Examples:
        keel outcomes --as-of 2016-09-05
    """
    _run_production("outcomes", params, as_of)


@app.command()
def monitor(params: ParamsOption = Path("params.yaml"), as_of: AsOfOption = None) -> None:
    """Measure accuracy and drift of the window ending at --as-of; emit events on breaches.

    Examples:
        keel monitor --as-of 2016-10-03
    """
    _run_production("monitor", params, as_of)


@app.command()
def retrain(params: ParamsOption = Path("params.yaml"), as_of: AsOfOption = None) -> None:
    """Retrain on the labels known at --as-of and gate the challenger (respects the cooldown).

    Examples:
        keel retrain --as-of 2016-10-03
    """
    _run_production("retrain", params, as_of)


@app.command("serve")
def serve_command(params: ParamsOption = Path("params.yaml")) -> None:
    """Serve score, outcomes and monitor on their schedules and retrain on events.

    Needs a Prefect server: start one with `keel server start` and set
    PREFECT_API_URL=http://127.0.0.1:4200/api. Stop with Ctrl-C (schedules stay active).
    """
    root = params.resolve().parent
    _configure_environment(root)
    from prefect.settings import PREFECT_API_URL

    from flows.serve import serve_project
    from keel.config import load_params

    api = PREFECT_API_URL.value()
    if not api:
        _fail(
            "keel serve needs a running Prefect server: run `keel server start` and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    typer.echo(f"Prefect UI: {api.removesuffix('/api')}  (deployments, runs, automations)")
    try:
        serve_project(root, params.name, load_params(params.resolve()))
    except _known_errors() as exc:
        _fail(str(exc))


@app.command()
def synth(
    rows: Annotated[int, typer.Option(help="How many bookings to generate.", min=1)] = 1_000_000,
    out: Annotated[Path, typer.Option(help="The parquet file to write.", dir_okay=False)] = Path(
        "data/synth/bookings.parquet"
    ),
    source: Annotated[
        Path, typer.Option(help="The real bookings the generator learns from.", dir_okay=False)
    ] = Path("data/raw/hotel_bookings.csv.gz"),
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    chunk_rows: Annotated[int, typer.Option(help="Rows per chunk (bounds memory).", min=1)] = (
        500_000
    ),
) -> None:
    """Write synthetic hotel bookings learned from the real ones (for benchmarks at scale).

    Examples:
        keel synth --rows 1000000 --out data/synth/bookings_1m.parquet
    """
    from keel.synth import fit_synthesizer, write_synthetic
    from keel.table import SourceError, read_source

    try:
        fitted = fit_synthesizer(read_source(source), seed=seed)
    except SourceError as exc:
        _fail(str(exc))
    write_synthetic(fitted, rows, out, seed=seed, chunk_rows=chunk_rows)
    typer.echo(f"wrote {rows} synthetic bookings to {out}")


@app.command("api")
def api_command(
    params: ParamsOption = Path("params.yaml"),
    host: Annotated[str | None, typer.Option(help="Interface (default: api.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: api.port).")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes (default: api.workers).", min=1)
    ] = None,
) -> None:
    """Serve the online scoring API and the dashboard (FastAPI on uvicorn).

    Keys come from KEEL_API_KEYS (comma-separated). POST /v1/predict scores records with the
    champion and swaps in a new champion within seconds of its promotion; /dashboard shows
    performance, drift, volume and lineage; /docs is the OpenAPI documentation.

    Examples:
        KEEL_API_KEYS=s3cret keel api
        keel api --port 8080 --workers 2
    """
    root = params.resolve().parent
    _configure_environment(root)
    from flows.api import api_keys, serve_api
    from keel.config import load_params

    try:
        config = load_params(params.resolve())
        api_keys(config)
    except ValueError as exc:  # a bad params file (ConfigError) or no API key
        _fail(str(exc))
    if not os.environ.get("KEEL_PREFECT_UI_URL"):
        from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

        ui = PREFECT_UI_URL.value() or (PREFECT_API_URL.value() or "").removesuffix("/api")
        if ui:
            os.environ["KEEL_PREFECT_UI_URL"] = ui
    api = config.api
    host, port = host or api.host, port or api.port
    typer.echo(f"Keel API on http://{host}:{port}  (dashboard /dashboard, docs /docs)")
    serve_api(root, params.name, host=host, port=port, workers=workers or api.workers)


def _step_days(text: str) -> int:
    units = {"d": 1, "w": 7}
    number, unit = text[:-1], text[-1:].lower()
    if unit not in units or not number.isdigit() or int(number) < 1:
        raise typer.BadParameter(f"'{text}' is not a step such as 7d or 1w")
    return int(number) * units[unit]


@app.command()
def replay(
    params: ParamsOption = Path("params.yaml"),
    start: Annotated[
        datetime.datetime | None,
        typer.Option(help="First simulated day (default: replay.start).", formats=["%Y-%m-%d"]),
    ] = None,
    end: Annotated[
        datetime.datetime | None,
        typer.Option(help="Last simulated day (default: replay.end).", formats=["%Y-%m-%d"]),
    ] = None,
    step: Annotated[
        str | None, typer.Option(help="Simulated time per step, e.g. 7d or 1w.")
    ] = None,
    strategies: Annotated[
        str | None,
        typer.Option(help="Comma-separated: static, scheduled, keel (default: all three)."),
    ] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Exit with status 3 when a target is missed.")
    ] = False,
) -> None:
    """Replay simulated production week by week and compare retraining strategies.

    Trains an initial champion on what was known at --start, then at every step runs the real
    outcomes, score and monitor flows as of the simulated date. `static` never retrains,
    `scheduled` retrains every 4 steps, `keel` only when its monitor's events start the retrain
    deployment through the Prefect automation. Needs a Prefect server (`keel server start`).
    Writes reports/replay/{summary.json,report.html,chart.png}.

    Examples:
        keel server start
        keel replay --start 2016-07-01 --end 2017-08-31 --step 7d
        keel replay --start 2016-07-01 --end 2016-09-30 --strategies static,keel
    """
    root = params.resolve().parent
    _configure_environment(root)
    # The progress bars are the terminal's view; every run's logs are in the Prefect UI.
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    from flows.replay import ReplayError
    from keel.config import load_params

    errors: tuple[type[Exception], ...] = (*_known_errors(), ReplayError, ValueError)
    try:
        config = load_params(params.resolve())
        update: dict[str, object] = {}
        if start is not None:
            update["start"] = start.date()
        if end is not None:
            update["end"] = end.date()
        if step is not None:
            update["step_days"] = _step_days(step)
        if strategies is not None:
            update["strategies"] = [s.strip() for s in strategies.split(",") if s.strip()]
        replay_config = type(config.replay).model_validate({**config.replay.model_dump(), **update})
    except errors as exc:
        _fail(str(exc))
    config = config.model_copy(update={"replay": replay_config})
    _server_api(root)
    missed = _replay_and_report(root, params.name, config)
    if check and missed:
        raise typer.Exit(3)


def _replay_and_report(root: Path, params_file: str, config: Params) -> list[str]:
    """Run the replay with progress bars, print the table; return the missed targets."""
    from flows.replay import ReplayError, run_replay
    from flows.replay_view import print_summary, progress_bars

    api = os.environ["PREFECT_API_URL"]
    typer.echo(f"Prefect UI: {api.removesuffix('/api')}  (runs are tagged keel-replay)")
    errors: tuple[type[Exception], ...] = (*_known_errors(), ReplayError)
    try:
        with progress_bars(config.replay.strategies) as on_progress:
            summary = run_replay(root, params_file, config, on_progress)
    except errors as exc:
        _fail(str(exc))
    return print_summary(summary)


@app.command()
def demo(params: ParamsOption = Path("params.yaml")) -> None:
    """The main job: replay fourteen months of production and compare retraining strategies.

    Starts a local Prefect server in the background unless PREFECT_API_URL is set, runs the
    replay of params.yaml (`replay` section) with the three strategies, prints the table and
    where the report and the UI are, and leaves the server running to browse. Stop it with
    `make stop` (or `keel server stop`). Ctrl-C stops everything, the server included.

    Examples:
        keel demo
        make demo
    """
    root = params.resolve().parent
    _configure_environment(root)
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    from flows.server import ServerError, start_server, stop_server
    from keel.config import load_params

    try:
        config = load_params(params.resolve())
    except _known_errors() as exc:
        _fail(str(exc))
    started_here = not os.environ.get("PREFECT_API_URL")
    if started_here:
        typer.echo("Starting a local Prefect server (state in .keel/prefect) ...")
        try:
            os.environ["PREFECT_API_URL"] = start_server(root)
        except ServerError as exc:
            _fail(str(exc))
    try:
        _replay_and_report(root, params.name, config)
    except KeyboardInterrupt:
        if started_here:
            typer.echo(stop_server(root), err=True)
        raise
    ui = os.environ["PREFECT_API_URL"].removesuffix("/api")
    typer.echo(f"Prefect UI: {ui}  (flow runs, artifacts 'replay-report', automations)")
    if started_here:
        typer.echo("The Prefect server keeps running; stop it with `make stop`.")


def _server_api(root: Path) -> str:
    """The Prefect API to use: PREFECT_API_URL, else the server `keel server start` runs."""
    from flows.server import running_server

    api = os.environ.get("PREFECT_API_URL") or running_server(root)
    if not api:
        _fail(
            "this needs a running Prefect server (events and automations): run "
            "`keel server start`, or set PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    os.environ["PREFECT_API_URL"] = api
    return api


server_app = typer.Typer(
    help="A local Prefect server in the background (its state in .keel/prefect).",
    no_args_is_help=True,
)
app.add_typer(server_app, name="server")


@server_app.command("start")
def server_start(
    params: ParamsOption = Path("params.yaml"),
    port: Annotated[int, typer.Option(help="Port of the API and UI.")] = 4200,
) -> None:
    """Start a Prefect server in the background (no-op if one is running).

    Examples:
        keel server start && export PREFECT_API_URL=http://127.0.0.1:4200/api
    """
    root = params.resolve().parent
    _configure_environment(root)
    from flows.server import ServerError, start_server

    try:
        api = start_server(root, port)
    except ServerError as exc:
        _fail(str(exc))
    typer.echo(f"Prefect server: {api.removesuffix('/api')}  (stop: keel server stop)")


@server_app.command("stop")
def server_stop(params: ParamsOption = Path("params.yaml")) -> None:
    """Stop the Prefect server started by `keel server start`."""
    from flows.server import stop_server

    typer.echo(stop_server(params.resolve().parent))


@server_app.command("status")
def server_status(params: ParamsOption = Path("params.yaml")) -> None:
    """Say whether the server started by `keel server start` is running."""
    from flows.server import running_server

    api = running_server(params.resolve().parent)
    typer.echo(f"running: {api.removesuffix('/api')}" if api else "not running")
    if not api:
        raise typer.Exit(1)


@app.command("serve-replay", hidden=True)
def serve_replay_command(state: Path) -> None:
    """Serve a replay's retrain deployments (started by `keel replay` itself)."""
    _configure_environment(state.resolve().parent.parent)
    from flows.serve import serve_replay

    serve_replay(state.resolve())


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":  # `python -m flows.cli`, used by `keel models reproduce`
    main()
