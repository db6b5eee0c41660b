"""register -> gate -> promote at the end of the training flow, on a real Prefect server."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from flows.cli import app
from flows.train import train_flow
from keel.registry import repository as repo
from keel.registry.store import ArtifactIntegrityError
from tasks.registry import open_registry

pytestmark = pytest.mark.usefixtures("prefect_harness")
runner = CliRunner()


def events(name: str, model: str, want: int, timeout: float = 30.0) -> list[dict[str, object]]:
    """This model's events of one kind; they are persisted asynchronously, so poll."""
    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            page = client.read_events(
                EventFilter(
                    event=EventNameFilter(name=[name]),
                    resource=EventResourceFilter(id=[f"keel.model.{model}"]),
                ),
                limit=50,
            )
        found = [dict(e.payload) for e in page.events if dict(e.payload).get("model") == model]
        if len(found) >= want or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def set_gate(root: Path, **gate: object) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["gate"] = {**params.get("gate", {}), **gate}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_first_model_becomes_champion_then_the_gate_decides(
    small_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEEL_ACTOR", "ci-test")
    set_gate(small_project, model_name="hotel-test", min_improvement=0.002)

    first = train_flow(root=str(small_project))
    assert first["version"] == 1
    assert first["decision"]["outcome"] == "promote"
    assert "no champion" in " ".join(first["decision"]["reasons"])

    # A retrained twin cannot beat the champion by the minimum improvement: rejected.
    second = train_flow(root=str(small_project), force=True)
    assert second["version"] == 2
    assert second["decision"]["outcome"] == "reject"

    registry = open_registry(small_project)
    with Session(registry.engine) as s:
        assert repo.get_alias(s, "hotel-test", "champion").version == 1  # type: ignore[union-attr]
        v2 = repo.get_version(s, "hotel-test", 2)
        assert v2.gate_outcome == "reject"
        assert v2.created_by == "ci-test"
        assert v2.code_version.keys() == {"commit", "dirty"}
        assert v2.fingerprints["source_md5"] and v2.libraries["xgboost"]
        assert v2.flow_run_id is not None
        trail = [(e.event, e.version) for e in repo.audit_log(s, "hotel-test")]
    assert trail == [
        ("registered", 1),
        ("evaluated", 1),
        ("promoted", 1),
        ("registered", 2),
        ("evaluated", 2),
        ("rejected", 2),
    ]
    promoted = events("keel.model.promoted", "hotel-test", 1)
    rejected = events("keel.model.rejected", "hotel-test", 1)
    registered = events("keel.model.registered", "hotel-test", 2)
    assert [e["candidate"]["version"] for e in promoted] == [1]  # type: ignore[index]
    assert [e["candidate"]["version"] for e in rejected] == [2]  # type: ignore[index]
    assert {e["version"] for e in registered} == {1, 2}
    assert rejected[0]["outcome"] == "reject" and rejected[0]["champion"]["version"] == 1  # type: ignore[index]


def test_approval_required_waits_for_a_person(small_project: Path) -> None:
    set_gate(small_project, model_name="hotel-approve", min_improvement=0.0, require_approval=True)
    assert train_flow(root=str(small_project))["decision"]["outcome"] == "promote"
    waiting = train_flow(root=str(small_project), force=True)
    assert waiting["decision"]["outcome"] == "await_approval"
    params = str(small_project / "params.yaml")
    result = runner.invoke(app, ["models", "approve", "2", "--params", params])
    assert result.exit_code == 0, result.output
    assert "v2 is champion (was: 1)" in result.output
    # Approving again is refused: v2 is no longer the waiting challenger.
    again = runner.invoke(app, ["models", "approve", "2", "--params", params])
    assert again.exit_code == 1 and "not the current challenger" in again.output


def test_tampered_champion_is_refused_at_load(small_project: Path) -> None:
    set_gate(small_project, model_name="hotel-tamper")
    train_flow(root=str(small_project))
    registry = open_registry(small_project)
    objects = [p for p in (small_project / ".keel/artifacts").rglob("*") if p.is_file()]
    model_object = max(objects, key=lambda p: p.stat().st_size)  # model.ubj is the largest
    data = bytearray(model_object.read_bytes())
    data[len(data) // 2] ^= 0x01
    model_object.write_bytes(bytes(data))
    with Session(registry.engine) as s:
        row = repo.get_version(s, "hotel-tamper", 1)
    with pytest.raises(ArtifactIntegrityError) as caught:
        registry.store.verify_bundle(row.artifact_sha256, label="model hotel-tamper v1")
    message = str(caught.value)
    assert "hotel-tamper v1" in message
    assert caught.value.expected in message and caught.value.actual in message
    assert caught.value.expected != caught.value.actual
    # The gate refuses to compare against a corrupted champion: the flow fails loudly.
    with pytest.raises(ArtifactIntegrityError):
        train_flow(root=str(small_project), force=True)


def test_models_cli_commands_and_errors(
    small_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_gate(small_project, model_name="hotel-cli", min_improvement=0.0)
    params = str(small_project / "params.yaml")

    def keel(*args: str) -> tuple[int, str]:
        out = runner.invoke(app, [*args, "--params", params])
        return out.exit_code, out.output

    train_flow(root=str(small_project))
    code, output = keel("models", "rollback", "--reason", "no")
    assert code == 1 and "no previous champion" in output
    train_flow(root=str(small_project), force=True)  # v2 passes (min improvement 0) -> champion

    code, output = keel("models", "list")
    assert code == 0 and "hotel-cli" in output and "champion" in output
    code, output = keel("models", "show", "2")
    assert code == 0 and '"version": 2' in output and '"code_version"' in output
    code, output = keel("models", "diff", "1", "2")
    assert code == 0 and ("v1 and v2 have identical" in output or "fingerprints" in output)
    code, output = keel("models", "promote", "1", "--reason", "manual check")
    assert code == 0 and "v1 is champion (was: 2)" in output
    code, output = keel("models", "rollback", "--reason", "undo")
    assert code == 0 and "v2 is champion again" in output
    code, output = keel("models", "history")
    assert code == 0 and "rolled_back" in output and "manual check" in output
    code, output = keel("models", "show", "42")
    assert code == 1 and "has no version 42" in output
    code, output = keel("models", "approve", "1")
    assert code == 1 and "only a version awaiting approval" in output

    monkeypatch.setenv("KEEL_DATABASE_URL", "postgresql+psycopg://keel:pw@127.0.0.1:1/keel")
    code, output = keel("models", "list")
    assert code == 1 and "cannot open the Keel database" in output and "pw" not in output
