"""keel.model: device choice, recency weights, training and UBJSON persistence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from keel import model as km
from keel.config import DataConfig, FeaturizeConfig, SplitConfig, TrainConfig
from keel.features import fit_feature_spec
from keel.metrics import classification_metrics

DATA = DataConfig(task="binary", target="y")
CONFIG = TrainConfig(
    device="cpu",
    seed=1,
    num_boost_round=60,
    early_stopping_rounds=10,
    nthread=2,
    xgboost={"max_depth": 3, "eta": 0.3},
)


def problem(n: int = 400, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """A numeric and a categorical signal; the label is drawn from their logistic."""
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(
        {
            "n": rng.normal(size=n),
            "c": pd.Categorical(rng.choice(["a", "b", "c"], n), categories=["a", "b", "c"]),
        }
    )
    logit = 3 * x["n"] + np.select([x["c"] == "a", x["c"] == "b"], [2.0, -2.0], 0.0)
    y = pd.Series((rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int))
    return x, y


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.Series, pd.DataFrame, pd.Series]:
    x, y = problem()
    vx, vy = problem(200, seed=1)
    return x, y, vx, vy


@pytest.fixture(scope="module")
def trained(
    data: tuple[pd.DataFrame, pd.Series, pd.DataFrame, pd.Series],
) -> km.TrainResult:
    x, y, vx, vy = data
    return km.train_model(x, y, vx, vy, data=DATA, config=CONFIG, full=(x, y, None))


# --- device ----------------------------------------------------------------------------------


def test_cpu_is_always_cpu() -> None:
    assert km.resolve_device("cpu") == "cpu"


def test_auto_follows_cuda_availability() -> None:
    expected = "cuda" if km._cuda_usable() else "cpu"
    assert km.resolve_device("auto") == expected
    assert km.resolve_device("auto") == expected  # the probe is cached and consistent


def test_cuda_without_a_gpu_raises() -> None:
    if km._cuda_usable():
        pytest.skip("a CUDA GPU is usable here")
    with pytest.raises(RuntimeError, match=r"train\.device is 'cuda' but no usable CUDA GPU"):
        km.resolve_device("cuda")


# --- recency weights -------------------------------------------------------------------------


def test_recency_weights() -> None:
    reference = pd.Timestamp("2016-07-01")
    times = pd.Series(
        pd.to_datetime(
            [
                "2016-07-01",  # age 0
                "2016-04-02",  # age 90: one half-life
                "2016-01-03",  # age 180: two half-lives
                "2016-06-16",  # age 15
                "2016-07-10",  # in the future: capped at weight 1
                None,  # unknown time: weight 1
            ]
        )
    )
    weights = km.recency_weights(times, reference, 90)
    assert isinstance(weights, np.ndarray) and weights.dtype == np.float64
    np.testing.assert_allclose(weights, [1.0, 0.5, 0.25, 0.5 ** (15 / 90), 1.0, 1.0])
    assert (weights <= 1.0).all()


@pytest.mark.parametrize("half_life", [1.0, 30.0, 365.0])
def test_recency_weight_halves_at_the_half_life(half_life: float) -> None:
    reference = pd.Timestamp("2020-01-01")
    times = pd.Series([reference, reference - pd.Timedelta(days=half_life)])
    np.testing.assert_allclose(km.recency_weights(times, reference, half_life), [1.0, 0.5])


# --- training --------------------------------------------------------------------------------


def test_training_is_deterministic(
    data: tuple[pd.DataFrame, pd.Series, pd.DataFrame, pd.Series], trained: km.TrainResult
) -> None:
    x, y, vx, vy = data
    again = km.train_model(x, y, vx, vy, data=DATA, config=CONFIG, full=(x, y, None))
    np.testing.assert_array_equal(km.predict(trained.booster, vx), km.predict(again.booster, vx))
    assert again.best_iteration == trained.best_iteration
    assert again.best_score == trained.best_score


def test_training_learns_the_signal(
    data: tuple[pd.DataFrame, pd.Series, pd.DataFrame, pd.Series], trained: km.TrainResult
) -> None:
    x, y, vx, vy = data
    train_auc = classification_metrics(y.to_numpy(), km.predict(trained.booster, x), 0.5)
    valid_auc = classification_metrics(vy.to_numpy(), km.predict(trained.booster, vx), 0.5)
    assert train_auc["roc_auc"] > 0.8
    assert valid_auc["roc_auc"] > 0.8
    scores = km.predict(trained.booster, vx)
    assert scores.dtype == np.float64 and ((scores > 0) & (scores < 1)).all()


def test_train_result_summary(trained: km.TrainResult) -> None:
    assert trained.device == "cpu"
    assert trained.rounds == trained.best_iteration + 1
    assert trained.booster.num_boosted_rounds() == trained.rounds
    assert trained.params["objective"] == "binary:logistic"
    assert trained.params["seed"] == 1 and trained.params["max_depth"] == 3
    assert 0 < trained.best_score < 1  # the last eval metric: validation AUC


def test_without_refit_the_booster_is_cut_at_the_best_round(
    data: tuple[pd.DataFrame, pd.Series, pd.DataFrame, pd.Series],
) -> None:
    x, y, vx, vy = data
    config = CONFIG.model_copy(update={"refit_full": False})
    result = km.train_model(x, y, vx, vy, data=DATA, config=config)
    assert result.booster.num_boosted_rounds() == result.best_iteration + 1


def test_regression_task(data: tuple[pd.DataFrame, pd.Series, pd.DataFrame, pd.Series]) -> None:
    x, _, vx, _ = data
    target, vtarget = 2 * x["n"] + 1, 2 * vx["n"] + 1
    config = CONFIG.model_copy(update={"num_boost_round": 40})
    result = km.train_model(
        x, target, vx, vtarget, data=DataConfig(task="regression", target="t"), config=config
    )
    assert result.params["objective"] == "reg:squarederror"
    predictions = km.predict(result.booster, vx)
    assert np.corrcoef(predictions, vtarget)[0, 1] > 0.95


def test_ubj_round_trip_gives_identical_predictions(
    tmp_path: Path,
    data: tuple[pd.DataFrame, pd.Series, pd.DataFrame, pd.Series],
    trained: km.TrainResult,
) -> None:
    _, _, vx, _ = data
    path = tmp_path / "model.ubj"
    trained.booster.save_model(str(path))
    assert path.read_bytes()[:1] == b"{"  # UBJSON object, not a pickle
    loaded = km.load_booster(path)
    np.testing.assert_array_equal(km.predict(loaded, vx), km.predict(trained.booster, vx))


def test_bundle_scores_raw_records(
    tmp_path: Path,
    data: tuple[pd.DataFrame, pd.Series, pd.DataFrame, pd.Series],
    trained: km.TrainResult,
) -> None:
    x, _, vx, _ = data
    raw = x.assign(c=x["c"].astype(str))
    spec = fit_feature_spec(
        raw, FeaturizeConfig(numeric=["n"], categorical=["c"], split=SplitConfig(method="random"))
    )
    trained.booster.save_model(str(tmp_path / "model.ubj"))
    (tmp_path / "feature_spec.json").write_text(spec.to_json(), encoding="utf-8")
    (tmp_path / "metadata.json").write_text(json.dumps({"target": "y"}), encoding="utf-8")
    bundle = km.load_bundle(tmp_path)
    assert bundle.metadata == {"target": "y"} and bundle.spec == spec
    raw_valid = vx.assign(c=vx["c"].astype(str))
    np.testing.assert_array_equal(bundle.predict(raw_valid), km.predict(trained.booster, vx))
