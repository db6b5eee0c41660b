"""`dvc.yaml`, `params.yaml`, the CLI and the code layout agree."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml
from typer.main import get_command

from flows.cli import app
from keel.config import load_params
from keel.layout import STAGES, ProjectPaths

REPO = Path(__file__).resolve().parents[2]
DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


def _lookup(tree: dict[str, object], dotted: str) -> object:
    node: object = tree
    for part in dotted.split("."):
        assert isinstance(node, dict) and part in node, f"params.yaml has no '{dotted}'"
        node = node[part]
    return node


def test_stages_are_one_name_everywhere() -> None:
    assert tuple(DVC) == STAGES
    stage_group = get_command(app).commands["stage"]  # type: ignore[attr-defined]
    assert set(stage_group.commands) == set(STAGES)
    for name, stage in DVC.items():
        assert stage["cmd"] == f"keel stage {name}"
    # Flow-only sections: register -> gate -> promote, and the production flows.
    flow_only = {"data", "gate", "score", "monitor", "retrain", "serve", "api", "replay"}
    assert set(PARAMS) == {*flow_only, "engine", *STAGES}  # engine: where stages run


def test_params_listed_in_dvc_exist_and_every_section_is_used() -> None:
    used = set()
    for stage in DVC.values():
        for key in stage.get("params", []):
            _lookup(PARAMS, key)
            used.add(key.split(".")[0])
    assert used == {"data", "monitor", "engine", *STAGES}
    load_params(REPO / "params.yaml")  # and the file itself parses


@pytest.mark.parametrize("name", STAGES)
def test_deps_exist_and_code_deps_are_python_modules(name: str) -> None:
    for dep in DVC[name]["deps"]:
        if dep.startswith("${"):
            _lookup(PARAMS, dep[2:-1])
        elif dep.endswith(".py"):
            assert (REPO / dep).is_file(), dep


def test_outputs_match_the_layout() -> None:
    paths = ProjectPaths(REPO)
    expected = {
        "ingest": {paths.table},
        "validate": {paths.validation_dir},
        "featurize": {paths.features_dir},
        "train": {paths.model_dir},
        "evaluate": {paths.metrics, paths.plots_dir},
    }
    for name, stage in DVC.items():
        declared = set()
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                declared |= {REPO / (entry if isinstance(entry, str) else next(iter(entry)))}
        assert declared == expected[name], name


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_imports_flow_one_way_and_there_is_no_pickle() -> None:
    for layer, banned in (("keel", {"prefect", "tasks", "flows"}), ("tasks", {"flows"})):
        for module in (REPO / layer).rglob("*.py"):
            assert not _imports(module) & banned, f"{module} imports {_imports(module) & banned}"
    for layer in ("keel", "tasks", "flows"):
        for module in (REPO / layer).rglob("*.py"):
            assert not _imports(module) & {"pickle", "joblib", "cloudpickle", "dill"}, module


def test_code_stage_deps_cover_what_each_stage_imports() -> None:
    """A code change must invalidate the stages that run that code (at least directly)."""
    stage_code = _imports(REPO / "tasks/stages.py")
    assert "keel" in stage_code
    listed = {dep for stage in DVC.values() for dep in stage["deps"] if dep.startswith("keel/")}
    for module in ("table", "validation", "features", "splits", "model", "metrics"):
        assert f"keel/{module}.py" in listed, module
