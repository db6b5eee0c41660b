"""`keel models ...`: look at, compare, promote, approve, roll back and reproduce versions."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help=(
        "Inspect and manage registered model versions.\n\n"
        "Examples:\n\n"
        "  keel models list\n\n"
        "  keel models diff 1 2\n\n"
        "  keel models approve 3\n\n"
        "  keel models rollback --reason 'v3 mis-scores group bookings'\n\n"
        "  keel models reproduce 1"
    ),
    no_args_is_help=True,
)
console = Console()

ParamsOption = Annotated[
    Path, typer.Option("--params", "-p", help="The project's params file.", dir_okay=False)
]
ModelOption = Annotated[
    str | None, typer.Option("--model", "-m", help="Model name (default: gate.model_name).")
]
ReasonOption = Annotated[str, typer.Option("--reason", "-r", help="Why (kept in the audit trail).")]


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


@contextmanager
def _registry(params: Path, model: str | None) -> Iterator[tuple[Any, str, Path]]:
    """Open the project's registry; turn every known failure into a clear one-line error."""
    from flows.cli import _configure_environment

    root = params.resolve().parent
    _configure_environment(root)
    from keel.config import ConfigError, load_params
    from keel.db import DatabaseUnavailableError
    from keel.registry.repository import RegistryError
    from keel.registry.store import ArtifactError
    from tasks.registry import open_registry
    from tasks.reproduce import ReproduceError

    try:
        name = model or load_params(params.resolve()).gate.model_name
        yield open_registry(root), name, root
    except (
        ConfigError,
        DatabaseUnavailableError,
        RegistryError,
        ArtifactError,
        ReproduceError,
    ) as exc:
        _fail(str(exc))


def _primary(metrics: dict[str, Any]) -> str:
    value = (metrics.get("holdout") or {}).get("roc_auc")
    return f"{value:.4f}" if isinstance(value, float) else "-"


@app.command("list")
def list_(params: ParamsOption = Path("params.yaml"), model: ModelOption = None) -> None:
    """List every version with its aliases, holdout ROC AUC and gate outcome."""
    from keel.registry import repository as repo

    with _registry(params, model) as (registry, name, _root), registry.session() as s:
        aliases = {
            alias: getattr(repo.get_alias(s, name, alias), "version", None)
            for alias in repo.ALIASES
        }
        table = Table(title=f"model {name}")
        for column in ("version", "created", "by", "device", "roc_auc", "gate", "alias"):
            table.add_column(column)
        for row in repo.list_versions(s, name):
            held = ", ".join(a for a, v in aliases.items() if v == row.version)
            table.add_row(
                str(row.version),
                row.created_at.strftime("%Y-%m-%d %H:%M"),
                row.created_by,
                row.device,
                _primary(row.metrics),
                row.gate_outcome or "-",
                held,
            )
        console.print(table)


def _card(row: Any) -> dict[str, Any]:
    return {
        "model": row.model_name,
        "version": row.version,
        "created_at": row.created_at.isoformat(),
        "created_by": row.created_by,
        "flow_run_id": row.flow_run_id,
        "artifact": {"uri": row.artifact_uri, "sha256": row.artifact_sha256},
        "metrics": row.metrics,
        "training_window": row.training_window,
        "fingerprints": row.fingerprints,
        "code_version": row.code_version,
        "libraries": row.libraries,
        "device": row.device,
        "gate": {"outcome": row.gate_outcome, "decision": row.gate_decision},
        "params": row.params,
    }


@app.command()
def show(
    version: int, params: ParamsOption = Path("params.yaml"), model: ModelOption = None
) -> None:
    """Show a version's full card: metrics, lineage, gate decision, params (as JSON)."""
    from keel.registry import repository as repo

    with _registry(params, model) as (registry, name, _root), registry.session() as s:
        typer.echo(json.dumps(_card(repo.get_version(s, name, version)), indent=2, default=str))


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat |= _flatten(value, f"{prefix}.{key}" if prefix else str(key))
    return flat


@app.command()
def diff(
    v1: int, v2: int, params: ParamsOption = Path("params.yaml"), model: ModelOption = None
) -> None:
    """Compare two versions: params, metrics and data fingerprints that differ."""
    from keel.registry import repository as repo

    with _registry(params, model) as (registry, name, _root), registry.session() as s:
        a, b = repo.get_version(s, name, v1), repo.get_version(s, name, v2)
        sections: dict[str, Callable[[Any], Any]] = {
            "params": lambda r: r.params,
            "metrics": lambda r: r.metrics,
            "fingerprints": lambda r: r.fingerprints,
            "training_window": lambda r: r.training_window,
        }
        table = Table(title=f"{name}: v{v1} vs v{v2}")
        for column in ("section", "key", f"v{v1}", f"v{v2}"):
            table.add_column(column)
        changed = 0
        for section, get in sections.items():
            fa, fb = _flatten(get(a)), _flatten(get(b))
            for key in sorted(fa.keys() | fb.keys()):
                if fa.get(key) != fb.get(key):
                    changed += 1
                    table.add_row(section, key, str(fa.get(key, "-")), str(fb.get(key, "-")))
        console.print(table if changed else f"v{v1} and v{v2} have identical params and metrics")


@app.command()
def promote(
    version: int,
    reason: ReasonOption,
    params: ParamsOption = Path("params.yaml"),
    model: ModelOption = None,
) -> None:
    """Make VERSION the champion by hand (audited with your name and reason)."""
    from keel.registry import repository as repo

    with _registry(params, model) as (registry, name, _root):
        with registry.session() as s, s.begin():
            previous = repo.promote(s, name, version, actor=registry.actor, reason=reason)
        typer.echo(f"{name} v{version} is champion (was: {previous or 'none'})")


@app.command()
def approve(
    version: int, params: ParamsOption = Path("params.yaml"), model: ModelOption = None
) -> None:
    """Approve the waiting challenger VERSION (it passed the gate): it becomes champion."""
    from keel.registry import repository as repo

    with _registry(params, model) as (registry, name, _root):
        with registry.session() as s, s.begin():
            previous = repo.approve(s, name, version, actor=registry.actor)
        typer.echo(f"approved: {name} v{version} is champion (was: {previous or 'none'})")


@app.command()
def rollback(
    reason: ReasonOption, params: ParamsOption = Path("params.yaml"), model: ModelOption = None
) -> None:
    """Return the champion alias to the previous champion."""
    from keel.registry import repository as repo

    with _registry(params, model) as (registry, name, _root):
        with registry.session() as s, s.begin():
            version = repo.rollback(s, name, actor=registry.actor, reason=reason)
        typer.echo(f"rolled back: {name} v{version} is champion again")


@app.command()
def history(
    params: ParamsOption = Path("params.yaml"),
    model: ModelOption = None,
    limit: Annotated[int, typer.Option(help="Newest audit events to show.")] = 50,
) -> None:
    """Show the alias history and the audit trail."""
    from keel.registry import repository as repo

    with _registry(params, model) as (registry, name, _root), registry.session() as s:
        aliases = Table(title=f"{name}: alias history")
        for column in ("when", "alias", "version", "previous", "actor", "reason"):
            aliases.add_column(column)
        for h in repo.alias_history(s, name):
            aliases.add_row(
                h.changed_at.strftime("%Y-%m-%d %H:%M:%S"),
                h.alias,
                str(h.version or "-"),
                str(h.previous_version or "-"),
                h.actor,
                h.reason,
            )
        audit = Table(title=f"{name}: audit trail")
        for column in ("when", "event", "version", "actor", "reason"):
            audit.add_column(column)
        for e in repo.audit_log(s, name, limit):
            audit.add_row(
                e.at.strftime("%Y-%m-%d %H:%M:%S"), e.event, str(e.version), e.actor, e.reason
            )
        console.print(aliases)
        console.print(audit)


@app.command()
def reproduce(
    version: int, params: ParamsOption = Path("params.yaml"), model: ModelOption = None
) -> None:
    """Re-create VERSION from its recorded commit, params and data, and prove it.

    Prints whether the model bytes are identical or, failing that, the predictions on the
    evaluation window (to 1e-6); exits 1 if neither holds.
    """
    from tasks.reproduce import reproduce_version

    with _registry(params, model) as (registry, name, root):
        result = reproduce_version(root, registry, name, version)
        typer.echo(
            f"reproduced {name} v{version} from commit {result.commit[:12]}: {result.proof}"
            + (
                f" (max |diff| {result.max_abs_diff:.2g} on {result.rows_compared} rows)"
                if result.rows_compared
                else ""
            )
            + (" - note: the tree was dirty when it was trained" if result.dirty else "")
        )
