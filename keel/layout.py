"""Where each stage reads and writes, relative to the project root.

The same paths are the outputs listed in `dvc.yaml`; a contract test keeps the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["STAGES", "ProjectPaths"]

STAGES = ("ingest", "validate", "featurize", "train", "evaluate")


@dataclass(frozen=True)
class ProjectPaths:
    """All stage inputs and outputs of one project."""

    root: Path

    @property
    def table(self) -> Path:
        """Ingested source with entity keys (ingest output)."""
        return self.root / "data/interim/table.parquet"

    @property
    def validation_dir(self) -> Path:
        """Validation result JSON and Data Docs HTML (validate output)."""
        return self.root / "reports/validation"

    @property
    def validation_result(self) -> Path:
        """The validation result the featurize stage gates on."""
        return self.validation_dir / "result.json"

    @property
    def features_dir(self) -> Path:
        """Feature matrices per split part and the fitted spec (featurize output)."""
        return self.root / "data/features"

    def features(self, part: str) -> Path:
        """One split part's features: `train`, `fit`, `valid` or `holdout`."""
        return self.features_dir / f"{part}.parquet"

    @property
    def feature_spec(self) -> Path:
        """The fitted feature spec written by featurize."""
        return self.features_dir / "spec.json"

    @property
    def model_dir(self) -> Path:
        """Model, its feature spec and metadata (train output)."""
        return self.root / "models/model"

    @property
    def metrics(self) -> Path:
        """Holdout metrics (evaluate output, a DVC metrics file)."""
        return self.root / "reports/metrics.json"

    @property
    def plots_dir(self) -> Path:
        """Calibration, importance and per-slice tables (evaluate output, DVC plots)."""
        return self.root / "reports/plots"

    @property
    def state_dir(self) -> Path:
        """Keel's local state (Prefect home, databases) for this project."""
        return self.root / ".keel"
