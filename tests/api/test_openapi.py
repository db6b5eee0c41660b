"""The OpenAPI document describes the served model's request schema, and the API keeps to it
under fuzzing (Schemathesis against a running server)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.api.conftest import API_KEY, make_app
from tests.api.helpers import TestClient, running_server


def test_openapi_documents_the_served_models_request_schema(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    features = client.get("/v1/model").json()["served"]["features"]
    post = document["paths"]["/v1/predict"]["post"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    records = body["properties"]["records"]
    assert records["minItems"] == 1 and records["maxItems"] == 1000
    assert body["additionalProperties"] is False
    record = document["components"]["schemas"]["Record"]
    assert record["additionalProperties"] is False
    assert set(record["required"]) == set(features["numeric"]) | set(features["other"])
    assert record["properties"]["adr"]["anyOf"] == [{"type": "number"}, {"type": "null"}]
    assert {"type": "string"} in record["properties"]["hotel"]["anyOf"]
    assert "booking_id" in record["properties"] and "booking_id" not in record["required"]
    assert set(post["responses"]) == {"200", "400", "401", "413", "422", "503"}
    assert document["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"
    assert client.get("/docs").status_code == 200


@pytest.fixture(scope="module")
def live_url(served: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from tests.api.project import private_copy

    root = private_copy(served, tmp_path_factory.mktemp("fuzz") / "project")
    with running_server(make_app(root, log_predictions=False)) as url:
        yield url


@pytest.mark.slow
def test_api_keeps_to_its_schema_under_fuzzing(live_url: str) -> None:
    schema = schemathesis.openapi.from_url(f"{live_url}/openapi.json")
    tested = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            # No server error, documented status codes, content types and response schemas.
            case.call_and_validate(headers={"X-API-Key": API_KEY})

        check()
        tested.append(operation.label)
    assert "POST /v1/predict" in tested and len(tested) >= 5
