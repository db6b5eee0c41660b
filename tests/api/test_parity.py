"""Training/serving parity: a record gets the same score and reasons online and in a batch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from keel.config import load_params
from keel.matrix import build_matrix
from keel.scoring import score_records
from keel.store import Prediction
from tasks.production import load_records
from tests.api.helpers import TestClient, to_records
from tests.api.project import V2_BATCHES, registry_of


def test_batch_and_api_give_the_same_scores_and_reason_codes(
    project: Path, client: TestClient
) -> None:
    params = load_params(project / "params.yaml")
    batch_id = f"{params.gate.model_name}@{V2_BATCHES[-1].isoformat()}"
    engine, _ = registry_of(project)
    with Session(engine) as session:
        stored = session.execute(
            select(
                Prediction.entity_key,
                Prediction.score,
                Prediction.decision,
                Prediction.reasons,
                Prediction.model_version,
            ).where(Prediction.batch_id == batch_id)
        ).all()
    engine.dispose()
    batch = pd.DataFrame(stored, columns=["key", "score", "decision", "reasons", "version"])
    assert len(batch) > 30 and set(batch["version"]) == {2}  # scored by the `score` task

    feed = load_records(project, params).set_index("booking_id", drop=False)
    features = client.get("/v1/model").json()["served"]["features"]
    records = to_records(
        feed.loc[batch["key"]], features["numeric"] + features["other"], key="booking_id"
    )
    # Scored as of the batch's logical date: the same outcome history as the batch had.
    as_of = V2_BATCHES[-1].isoformat()
    # Small requests (one record, then a few) and one large request: both input paths.
    answers = [client.post("/v1/predict", json={"records": records[:1], "as_of": as_of})]
    answers += [
        client.post("/v1/predict", json={"records": records[i : i + 7], "as_of": as_of})
        for i in range(1, len(records), 7)
    ]
    answers.append(client.post("/v1/predict", json={"records": records, "as_of": as_of}))
    assert all(a.status_code == 200 for a in answers)
    small = [p for a in answers[:-1] for p in a.json()["predictions"]]
    large = answers[-1].json()["predictions"]
    for online in (small, large):
        served = pd.DataFrame(online).set_index("entity_key").loc[batch["key"]]
        assert (served["model_version"] == 2).all()
        assert (served["score"].to_numpy() - batch["score"].to_numpy()).__abs__().max() <= 1e-6
        assert served["decision"].tolist() == batch["decision"].tolist()
        stored_reasons = [r if isinstance(r, list) else json.loads(r) for r in batch["reasons"]]
        assert served["reasons"].tolist() == stored_reasons


def test_awkward_records_get_the_matrix_batch_scoring_builds(
    project: Path, client: TestClient
) -> None:
    # The API builds the model matrix from the request's records without a frame; batch
    # scoring builds it from a frame with `build_matrix`. Missing values, unseen categories,
    # numbers sent for text fields, numbers beyond float32 and unknown history keys included.
    loaded = client.app.state.keel.holder.current  # type: ignore[attr-defined]
    params = load_params(project / "params.yaml")
    feed = load_records(project, params)
    schema = loaded.schema
    records = to_records(feed.iloc[:40], list(schema.numeric + schema.other))
    numeric, other = list(schema.numeric), list(schema.other)
    for i, record in enumerate(records):
        record[numeric[i % len(numeric)]] = [None, 1e39, -0.0, 3.5][i % 4]
        record[other[i % len(other)]] = [None, "never seen", 7, 2.0, 9.5][i % 5]
    payload = {"records": records, "as_of": "2017-01-15"}
    validated, as_of = schema.validate_request(payload)
    assert as_of is not None
    frame = loaded.history.apply(schema.frame(validated), as_of)
    np.testing.assert_array_equal(
        loaded.matrix(validated, as_of), build_matrix(frame, loaded.bundle.spec)
    )
    # And over HTTP: the scores and reasons the batch function gives that frame.
    answer = client.post("/v1/predict", json=payload)
    assert answer.status_code == 200, answer.text
    online = answer.json()["predictions"]
    batch = score_records(
        loaded.bundle,
        frame,
        threshold=params.evaluate.threshold,
        reason_codes=params.score.reason_codes,
        reason_method=params.score.reason_method,
    )
    assert [p["score"] for p in online] == batch["score"].tolist()
    assert [p["reasons"] for p in online] == batch["reasons"].tolist()
