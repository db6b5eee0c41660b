"""`device: auto` and SHAP on the GPU: which booster computes the reason codes.

No GPU is needed: where CUDA is not usable the CPU booster is used whatever the model was
trained on; where it is (simulated), a CUDA copy is made once and the CPU booster is untouched.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import xgboost as xgb

from keel import model


@pytest.fixture()
def booster() -> xgb.Booster:
    rng = np.random.default_rng(0)
    x = rng.random((200, 3))
    return xgb.train({"tree_method": "hist"}, xgb.DMatrix(x, label=x[:, 0] > 0.5), 3)


def _device(b: xgb.Booster) -> str:
    return str(json.loads(b.save_config())["learner"]["generic_param"]["device"])


def test_cpu_trained_models_explain_on_the_cpu(
    booster: xgb.Booster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model, "_cuda_usable", lambda: True)
    assert model.shap_booster(booster, "cpu") is booster


def test_without_a_usable_gpu_the_cpu_explains(
    booster: xgb.Booster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model, "_cuda_usable", lambda: False)
    assert model.shap_booster(booster, "cuda") is booster
    assert model.shap_booster(booster, "cuda:0") is booster


def test_gpu_trained_models_explain_on_a_cuda_copy(
    booster: xgb.Booster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model, "_cuda_usable", lambda: True)
    calls: list[tuple[int, object]] = []
    set_param = xgb.Booster.set_param

    def spy(self: xgb.Booster, params: object, value: object = None) -> None:
        calls.append((id(self), params))
        set_param(self, params, value)  # type: ignore[arg-type]

    monkeypatch.setattr(xgb.Booster, "set_param", spy)
    with warnings.catch_warnings(), xgb.config_context(verbosity=0):
        warnings.simplefilter("ignore")  # this machine has no GPU: XGBoost would warn
        explainer = model.shap_booster(booster, "cuda")
        assert explainer is not booster
        assert model.shap_booster(booster, "cuda") is explainer  # made once per booster
    # The copy was set to CUDA (this machine falls back to the CPU); the original never was.
    devices = [(who, p) for who, p in calls if isinstance(p, dict) and "device" in p]
    assert devices == [(id(explainer), {"device": "cuda"})]
    assert _device(booster) == "cpu"


def test_scoring_takes_its_contributions_from_the_shap_booster(
    booster: xgb.Booster, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pandas as pd

    from keel import scoring
    from keel.features import FeatureSpec

    spec = FeatureSpec(
        numeric=["f0", "f1", "f2"], categories={}, derived={}, order=["f0", "f1", "f2"]
    )
    booster.feature_names = spec.order
    bundle = model.ModelBundle(booster, spec, {"device": "cuda"})
    asked: list[str] = []

    class Explainer:
        def predict(self, data: xgb.DMatrix, **_: object) -> np.ndarray:
            return np.tile([0.0, 2.0, -1.0, 0.5], (data.num_row(), 1))

    def fake(b: xgb.Booster, trained_on: str) -> Explainer:
        asked.append(trained_on)
        return Explainer()

    monkeypatch.setattr(scoring, "shap_booster", fake)
    records = pd.DataFrame(np.random.default_rng(1).random((5, 3)), columns=spec.order)
    scored = scoring.score_records(bundle, records, threshold=0.5, reason_codes=2)
    assert asked == ["cuda"]
    assert [r["feature"] for r in scored["reasons"].iloc[0]] == ["f1", "f2"]
