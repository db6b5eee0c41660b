"""POST /v1/predict and the other endpoints: answers, refusals, auth, metrics."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.api.conftest import API_KEY, OTHER_KEY, make_app
from tests.api.helpers import TestClient, to_records


@pytest.fixture(scope="module")
def feed(served: Path) -> pd.DataFrame:
    return pd.read_csv(served / "data/raw/hotel_bookings.csv.gz")


def columns(client: TestClient) -> list[str]:
    features = client.get("/v1/model").json()["served"]["features"]
    return features["numeric"] + features["other"]


def record(client: TestClient, feed: pd.DataFrame, row: int = 0) -> dict[str, Any]:
    return to_records(feed.iloc[[row]], columns(client))[0]


def post(client: TestClient, body: object, **kwargs: Any) -> Any:
    return client.post("/v1/predict", json=body, **kwargs)


def test_scores_records_with_decision_reasons_and_version(
    client: TestClient, feed: pd.DataFrame
) -> None:
    rows = to_records(feed.iloc[:5], columns(client))
    rows[0]["booking_id"] = "my-booking-1"
    response = post(client, {"records": rows})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "hotel-cancellations" and body["model_version"] == 2
    assert body["threshold"] == 0.5 and len(body["predictions"]) == 5
    for p in body["predictions"]:
        assert 0 <= p["score"] <= 1 and p["decision"] == int(p["score"] >= 0.5)
        assert p["model_version"] == 2
        assert [list(r) for r in p["reasons"]] == [["feature", "value", "contribution"]] * 3
        contributions = [abs(r["contribution"]) for r in p["reasons"]]
        assert contributions == sorted(contributions, reverse=True)
    assert body["predictions"][0]["entity_key"] == "my-booking-1"
    assert body["predictions"][1]["entity_key"].startswith("api-")


def test_missing_or_wrong_key_is_401(project: Path) -> None:
    with TestClient(make_app(project)) as anonymous:
        body = {"records": [{}]}  # refused before it is read
        missing = anonymous.post("/v1/predict", json=body)
        assert missing.status_code == 401
        assert missing.json() == {"detail": "missing API key: send it in the X-API-Key header"}
        wrong = anonymous.post("/v1/predict", json=body, headers={"X-API-Key": "not-a-key"})
        assert wrong.status_code == 401 and wrong.json() == {"detail": "invalid API key"}
        assert anonymous.get("/v1/model").status_code == 401
        # Either configured key works; the dashboard also takes it as a Basic password.
        other = anonymous.get("/v1/model", headers={"X-API-Key": OTHER_KEY})
        assert other.status_code == 200
        page = anonymous.get("/dashboard")
        assert page.status_code == 401 and page.headers["www-authenticate"].startswith("Basic")
        basic = base64.b64encode(f"me:{API_KEY}".encode()).decode()
        assert anonymous.get("/dashboard", headers={"Authorization": f"Basic {basic}"}).is_success
        # Health, readiness and metrics are public by default.
        for path in ("/healthz", "/readyz", "/metrics"):
            assert anonymous.get(path).status_code == 200, path


def test_public_paths_are_configurable(project: Path) -> None:
    with TestClient(make_app(project, public_paths=["/healthz"])) as anonymous:
        assert anonymous.get("/healthz").status_code == 200
        assert anonymous.get("/metrics").status_code == 401
        assert anonymous.get("/metrics", headers={"X-API-Key": API_KEY}).status_code == 200


def test_no_key_configured_refuses_to_start(project: Path) -> None:
    from keel.serving.auth import ApiKeys

    with pytest.raises(ValueError, match="KEEL_API_KEYS"):
        ApiKeys.from_env_value(" , ")
    keys = ApiKeys.from_env_value("a, b")
    assert len(keys) == 2 and keys.accepts("b") and not keys.accepts("c")
    assert not keys.accepts("") and not keys.accepts(None)
    assert "a" not in repr(keys) and all(len(d) == 32 for d in keys._digests)  # digests only


def test_malformed_json_is_400(client: TestClient) -> None:
    response = client.post(
        "/v1/predict",
        content=b'{"records": [{"adr": 1,}]}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["detail"].startswith("malformed JSON: Expecting property name")
    empty = client.post("/v1/predict", content=b"")
    assert empty.status_code == 400 and "the body is empty" in empty.json()["detail"]


def problems(response: Any) -> dict[str, tuple[str, str]]:
    assert response.status_code == 422, response.text
    return {e["field"]: (e["type"], e["msg"]) for e in response.json()["detail"]}


def test_wrong_types_are_422_naming_the_field(client: TestClient, feed: pd.DataFrame) -> None:
    rec = record(client, feed)
    found = problems(post(client, {"records": [{**rec, "adr": "cheap"}, {**rec, "hotel": True}]}))
    assert found == {
        "records[0].adr": ("number_type", "Input should be a number or null"),
        "records[1].hotel": ("category_type", "Input should be a string, a number or null"),
    }
    assert problems(post(client, {"records": [{**rec, "lead_time": True}]})) == {
        "records[0].lead_time": ("number_type", "Input should be a number or null")
    }
    assert problems(post(client, {"records": "all of them"}))["records"][0] == "list_type"
    assert problems(post(client, [rec]))["(body)"][0] == "model_type"


def test_unknown_and_missing_fields_are_422(client: TestClient, feed: pd.DataFrame) -> None:
    rec = record(client, feed)
    assert problems(post(client, {"records": [{**rec, "colour": "blue"}]})) == {
        "records[0].colour": ("extra_forbidden", "Extra inputs are not permitted")
    }
    incomplete = {k: v for k, v in rec.items() if k != "adr"}
    assert problems(post(client, {"records": [incomplete]})) == {
        "records[0].adr": ("missing", "Field required")
    }
    assert problems(post(client, {"records": [rec], "debug": True})) == {
        "debug": ("extra_forbidden", "Extra inputs are not permitted")
    }
    assert problems(post(client, {})) == {"records": ("missing", "Field required")}


def test_empty_list_is_422(client: TestClient) -> None:
    assert problems(post(client, {"records": []})) == {
        "records": ("too_short", "List should have at least 1 item after validation, not 0")
    }


def test_too_many_records_is_413(project: Path, feed: pd.DataFrame) -> None:
    with TestClient(make_app(project, max_records=5), headers={"X-API-Key": API_KEY}) as client:
        rows = to_records(feed.iloc[:6], columns(client))
        response = post(client, {"records": rows})
        assert response.status_code == 413
        assert response.json() == {
            "detail": "too many records: 6 in one request, at most 5 (api.max_records); "
            "split the request"
        }
        assert post(client, {"records": rows[:5]}).status_code == 200


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_nan_and_infinity_are_422_naming_the_field(
    client: TestClient, feed: pd.DataFrame, token: str
) -> None:
    rec = record(client, feed)
    text = json.dumps({"records": [{**rec, "adr": 0.0, "country": "x"}]})
    text = text.replace('"adr": 0.0', f'"adr": {token}').replace(
        '"country": "x"', f'"country": {token}'
    )
    response = client.post("/v1/predict", content=text.encode())
    found = problems(response)
    assert set(found) == {"records[0].adr", "records[0].country"}
    assert found["records[0].adr"][0] == "finite_number"
    assert (
        "NaN and infinity are not valid, send null for a missing value"
        in found["records[0].adr"][1]
    )


def test_oversized_body_is_413_declared_or_streamed(project: Path) -> None:
    with TestClient(
        make_app(project, max_body_bytes=2048), headers={"X-API-Key": API_KEY}
    ) as client:
        big = b'{"records": [' + b" " * 4096 + b"]}"
        declared = client.post("/v1/predict", content=big)
        assert declared.status_code == 413
        assert declared.json() == {
            "detail": "request body too large: at most 2048 bytes (api.max_body_bytes)"
        }

        def chunks():  # no Content-Length: the body is counted as it streams
            for _ in range(8):
                yield b" " * 512

        streamed = client.post("/v1/predict", content=chunks())
        assert streamed.status_code == 413
        metrics = client.get("/metrics").text
        assert 'keel_api_errors_total{kind="too_large"} 2.0' in metrics


def test_model_card_health_and_readiness(client: TestClient) -> None:
    card = client.get("/v1/model").json()
    assert card["version"] == 2 and card["model"] == "hotel-cancellations"
    assert card["training_window"]["labels_known_by"] == "2016-07-03"  # retrained 2016-08-01
    assert 0.5 < card["metrics"]["holdout"]["roc_auc"] <= 1
    assert card["lineage"]["flow_run_id"] and card["lineage"]["fingerprints"]["source_md5"]
    assert card["served"]["sha256"] == card["artifact"]["sha256"]
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["version"] == 2


def test_not_ready_without_a_champion(tmp_path: Path, served: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "params.yaml").write_text((served / "params.yaml").read_text())
    with TestClient(make_app(empty), headers={"X-API-Key": API_KEY}) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "not ready"
        refused = post(client, {"records": [{}]})
        assert refused.status_code == 503
        assert refused.json() == {"detail": "no verified champion is loaded yet; see /readyz"}


def test_metrics_in_prometheus_text_format(client: TestClient, feed: pd.DataFrame) -> None:
    rows = to_records(feed.iloc[:3], columns(client))
    assert post(client, {"records": rows}).status_code == 200
    assert post(client, {"records": []}).status_code == 422
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for line in (
        'keel_api_requests_total{method="POST",route="/v1/predict",status="200"} 1.0',
        'keel_api_requests_total{method="POST",route="/v1/predict",status="422"} 1.0',
        'keel_api_rows_scored_total{version="2"} 3.0',
        'keel_api_errors_total{kind="validation"} 1.0',
        'keel_api_model_version{model="hotel-cancellations"} 2.0',
        "keel_api_model_swaps_total 1.0",
    ):
        assert line in text, line
    assert 'keel_api_request_duration_seconds_bucket{le="0.01",route="/v1/predict"}' in text
    assert 'keel_api_request_duration_seconds_count{route="/v1/predict"} 2.0' in text
