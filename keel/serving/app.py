"""The online scoring API and the monitoring dashboard: a FastAPI app factory.

`create_app` wires the pieces: the model holder (hot swap), the API-key check, the body-size
limit, Prometheus metrics, the prediction recorder and the dashboard pages. Scoring calls
`keel.scoring.score_matrix`, the step the batch `score` flow uses, with the same settings, on
the matrix `keel.matrix.matrix_from_columns` builds from the request (the values
`build_matrix` gives a batch), so a record gets the same score and reason codes online and in a
batch.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import plotly
from fastapi import FastAPI, HTTPException, Request, Security
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
)
from fastapi.security import APIKeyHeader
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from keel.config import ApiConfig
from keel.registry import repository as repo
from keel.registry.store import ArtifactStore
from keel.scoring import Scored, score_matrix
from keel.serving import dashboard
from keel.serving.auth import API_KEY_HEADER, ApiKeys, basic_password
from keel.serving.holder import LoadedModel, ModelHolder, ScoringOptions, model_card
from keel.serving.metrics import CONTENT_TYPE_LATEST, ApiMetrics
from keel.serving.middleware import BodyLimit, Instrumentation
from keel.serving.recorder import PredictionRecorder, ServedPrediction
from keel.serving.schema import (
    MalformedJSONError,
    Message,
    PredictResponse,
    TooManyRecordsError,
    ValidationFailedError,
    ValidationMessage,
    parse_json,
)

__all__ = ["DashboardOptions", "ServingState", "create_app"]

log = logging.getLogger(__name__)

_TEMPLATES = Path(__file__).parent / "templates"
_PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
# Up to this many records a request is scored on the event loop: a thread hand-off costs more
# than scoring them. Larger requests go to the thread pool so the loop keeps answering.
_INLINE_RECORDS = 4


@dataclass(frozen=True)
class DashboardOptions:
    """What the dashboard needs to know besides the database.

    Attributes:
        primary_metric: The metric drawn over time (`gate.primary_metric`).
        psi_threshold: The drift threshold (`monitor.psi_threshold`).
        window_days: The monitoring window (`monitor.window_days`), for the score histogram.
        prefect_ui: The Prefect UI's base URL, for links to the runs that made each model.
    """

    primary_metric: str = "roc_auc"
    psi_threshold: float = 0.25
    window_days: float = 28
    prefect_ui: str | None = None


@dataclass
class ServingState:
    """The app's moving parts (on `app.state.keel`; tests read them)."""

    holder: ModelHolder
    metrics: ApiMetrics
    recorder: PredictionRecorder | None
    config: ApiConfig
    keys: ApiKeys | None
    dashboard: DashboardOptions
    engine: Engine
    openapi_cache: dict[tuple[int, str] | None, dict[str, Any]] = field(default_factory=dict)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


def _served(
    loaded: LoadedModel, records: list[dict[str, Any]], scored: Scored, threshold: float
) -> dict[str, Any]:
    """The response body (plain Python values: JSON encodes them directly)."""
    key = loaded.schema.key
    predictions = []
    for record, score, decision, reasons in zip(
        records, scored.score.tolist(), scored.decision.tolist(), scored.reasons, strict=True
    ):
        given = record.get(key) if key else None
        predictions.append(
            {
                "entity_key": given if given is not None else f"api-{uuid.uuid4().hex}",
                "score": score,
                "decision": decision,
                "model_version": loaded.version,
                "reasons": reasons,
            }
        )
    return {
        "model": loaded.name,
        "model_version": loaded.version,
        "threshold": threshold,
        "predictions": predictions,
    }


def create_app(
    *,
    engine: Engine,
    store: ArtifactStore,
    scoring: ScoringOptions,
    config: ApiConfig,
    keys: ApiKeys | None,
    dashboard_options: DashboardOptions | None = None,
) -> FastAPI:
    """Build the API and dashboard app.

    Args:
        engine: The Keel database (registry and prediction store).
        store: The artifact store the champion is fetched from (checksums verified).
        scoring: How to score: model name, threshold, reasons (the batch flow's settings).
        config: The `api` section.
        keys: The accepted API keys; None only when `config.require_key` is false.
        dashboard_options: What the dashboard draws (defaults if None).

    Returns:
        The app. Its lifespan loads the champion, starts the alias watcher and the
        prediction recorder, and stops them on shutdown.

    Raises:
        ValueError: Keys are required but none are given.
    """
    if config.require_key and (keys is None or len(keys) == 0):
        raise ValueError(
            "no API key configured: set KEEL_API_KEYS (comma-separated keys), or set "
            "api.require_key: false in params.yaml for local use without keys"
        )
    metrics = ApiMetrics()
    metrics.model_version.labels(scoring.model_name).set(0)

    def swapped(loaded: LoadedModel) -> None:
        metrics.model_version.labels(loaded.name).set(loaded.version)
        metrics.swaps.inc()

    holder = ModelHolder(
        engine,
        store,
        scoring,
        on_swap=swapped,
        on_error=lambda _reason: metrics.errors.labels("model_load").inc(),
    )
    recorder = (
        PredictionRecorder(
            engine,
            flush_seconds=config.log_flush_seconds,
            max_queued=config.log_queue_rows,
            on_written=metrics.logged.inc,
            on_dropped=metrics.dropped.inc,
        )
        if config.log_predictions
        else None
    )
    state = ServingState(
        holder=holder,
        metrics=metrics,
        recorder=recorder,
        config=config,
        keys=keys if config.require_key else None,
        dashboard=dashboard_options or DashboardOptions(),
        engine=engine,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            await run_in_threadpool(holder.refresh)
        except Exception as exc:  # the database may come later: keep polling, not ready yet
            log.warning("cannot load the champion at startup: %s", exc)
        holder.start(config.poll_seconds)
        if recorder is not None:
            recorder.start()
        try:
            yield
        finally:
            holder.stop()
            if recorder is not None:
                await run_in_threadpool(recorder.close)
            ApiMetrics.process_exited(os.getpid())

    app = FastAPI(
        title="Keel scoring API",
        version="1",
        summary="Scores records with the registered champion, with reason codes.",
        description=(
            f"Send records to `POST /v1/predict` with your key in the `{API_KEY_HEADER}` "
            "header. The request schema is the served model's own feature spec: "
            "`GET /openapi.json` shows it for the model being served."
        ),
        lifespan=lifespan,
    )
    app.state.keel = state
    app.add_middleware(
        BodyLimit, limit=config.max_body_bytes, on_refused=_counter(metrics, "too_large")
    )
    app.add_middleware(Instrumentation, metrics=metrics)
    api_key = APIKeyHeader(
        name=API_KEY_HEADER, auto_error=False, description="One of the keys in KEEL_API_KEYS."
    )
    public = set(config.public_paths)

    async def authorize(request: Request, key: str | None = Security(api_key)) -> None:
        if state.keys is None or request.url.path in public:
            return
        browser = request.url.path.startswith("/dashboard")
        if key is None:
            key = basic_password(request.headers.get("authorization"))
        headers = {"WWW-Authenticate": 'Basic realm="keel"'} if browser else None
        if key is None:
            metrics.errors.labels("unauthorized").inc()
            raise HTTPException(
                401, f"missing API key: send it in the {API_KEY_HEADER} header", headers
            )
        if not state.keys.accepts(key):
            metrics.errors.labels("unauthorized").inc()
            raise HTTPException(401, "invalid API key", headers)

    secured = [Security(authorize)]

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        metrics.errors.labels("validation").inc()
        items = [
            {
                "loc": list(e["loc"]),
                "field": ".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0]),
                "msg": e["msg"],
                "type": e["type"],
            }
            for e in exc.errors()
        ]
        return JSONResponse({"detail": jsonable_encoder(items)}, status_code=422)

    refusals: dict[int | str, dict[str, Any]] = {
        400: {"model": Message, "description": "The body is not JSON."},
        401: {"model": Message, "description": "Missing or invalid API key."},
        413: {
            "model": Message,
            "description": "Body over api.max_body_bytes, or too many records.",
        },
        422: {"model": ValidationMessage, "description": "Missing, unknown or invalid fields."},
        503: {"model": Message, "description": "No verified champion is loaded yet."},
    }

    @app.post(
        "/v1/predict",
        dependencies=secured,
        response_model=PredictResponse,
        responses=refusals,
        openapi_extra={"requestBody": {"required": True, "content": {}}},
        tags=["scoring"],
    )
    async def predict(request: Request) -> Response:
        """Score 1 to `api.max_records` records with the champion.

        Each prediction has the score, the decision at the configured threshold, the top
        reason codes (feature, value, SHAP contribution) and the model version that scored it.
        A request is scored by one model version, even while a new champion is swapped in.
        """
        loaded = holder.current  # the one model this request uses, whatever happens next
        if loaded is None:
            metrics.errors.labels("not_ready").inc()
            return _error(503, "no verified champion is loaded yet; see /readyz")
        try:
            records, as_of = loaded.schema.validate_request(parse_json(await request.body()))
        except MalformedJSONError as exc:
            metrics.errors.labels("malformed").inc()
            return _error(400, str(exc))
        except TooManyRecordsError as exc:
            metrics.errors.labels("too_many_records").inc()
            return _error(413, str(exc))
        except ValidationFailedError as exc:
            metrics.errors.labels("validation").inc()
            return JSONResponse({"detail": exc.errors}, status_code=422)
        options = holder.options

        def score() -> Scored:
            return score_matrix(  # the batch `score` flow's scoring step, with its settings
                loaded.bundle,
                loaded.matrix(records, as_of),
                threshold=options.threshold,
                reason_codes=options.reason_codes,
                reason_method=options.reason_method,
            )

        scored = score() if len(records) <= _INLINE_RECORDS else await run_in_threadpool(score)
        body = _served(loaded, records, scored, options.threshold)
        metrics.rows_scored.labels(str(loaded.version)).inc(len(records))
        if recorder is not None:
            now = dt.datetime.now(dt.UTC)
            recorder.submit(
                [
                    ServedPrediction(
                        model_name=loaded.name,
                        model_version=loaded.version,
                        entity_key=p["entity_key"],
                        score=p["score"],
                        decision=p["decision"],
                        reasons=p["reasons"],
                        scored_at=now,
                    )
                    for p in body["predictions"]
                ]
            )
        return JSONResponse(body)

    @app.get(
        "/v1/model",
        dependencies=secured,
        responses={401: refusals[401], 503: refusals[503]},
        tags=["scoring"],
    )
    async def model() -> Response:
        """The served champion's card: version, training window, metrics and lineage."""
        loaded = holder.current
        if loaded is None:
            return _error(503, "no verified champion is loaded yet; see /readyz")
        return JSONResponse(
            {
                **loaded.card,
                "served": {
                    "sha256": loaded.sha256,
                    "loaded_at": loaded.loaded_at.isoformat(),
                    "features": {
                        "numeric": list(loaded.schema.numeric),
                        "other": list(loaded.schema.other),
                        "entity_key": loaded.schema.key,
                    },
                    "threshold": holder.options.threshold,
                },
            }
        )

    @app.get("/healthz", dependencies=secured, responses={401: refusals[401]}, tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @app.get(
        "/readyz",
        dependencies=secured,
        responses={401: refusals[401], 503: {"description": "No verified champion loaded yet."}},
        tags=["operations"],
    )
    async def readyz() -> Response:
        """Ready when a verified champion is loaded."""
        loaded = holder.current
        if loaded is None:
            return JSONResponse(
                {"status": "not ready", "detail": "no verified champion is loaded yet"},
                status_code=503,
            )
        return JSONResponse(
            {
                "status": "ready",
                "model": loaded.name,
                "version": loaded.version,
                "sha256": loaded.sha256,
                "loaded_at": loaded.loaded_at.isoformat(),
            }
        )

    @app.get(
        "/metrics",
        dependencies=secured,
        response_class=PlainTextResponse,
        responses={401: refusals[401]},
        tags=["operations"],
    )
    async def prometheus_metrics() -> Response:
        """Prometheus metrics (text exposition format)."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    _add_dashboard(app, state, secured)

    def openapi() -> dict[str, Any]:
        loaded = holder.current
        cache_key = None if loaded is None else (loaded.version, loaded.sha256)
        if cache_key not in state.openapi_cache:
            state.openapi_cache.clear()
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
            )
            body: dict[str, Any] = {"type": "object", "description": "No model loaded yet."}
            if loaded is not None:
                body = loaded.schema.json_schema()
                defs = body.pop("$defs", {})
                schema.setdefault("components", {}).setdefault("schemas", {}).update(defs)
            for path, item in schema["paths"].items():
                if state.keys is None or path in public:
                    for operation in item.values():
                        operation["security"] = []  # served without a key
            schema["paths"]["/v1/predict"]["post"]["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": body}},
            }
            state.openapi_cache[cache_key] = schema
        return state.openapi_cache[cache_key]

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _counter(metrics: ApiMetrics, kind: str) -> Any:
    return lambda: metrics.errors.labels(kind).inc()


def _add_dashboard(app: FastAPI, state: ServingState, secured: list[Any]) -> None:
    """The dashboard pages (server-rendered; Plotly's JavaScript from the plotly package)."""
    env = Environment(loader=FileSystemLoader(_TEMPLATES), autoescape=select_autoescape(["html"]))
    options = state.dashboard
    name = state.holder.options.model_name

    def render(template: str, **context: Any) -> HTMLResponse:
        loaded = state.holder.current
        html = env.get_template(template).render(
            model_name=name,
            served=None if loaded is None else loaded.version,
            prefect_ui=options.prefect_ui,
            **context,
        )
        return HTMLResponse(html)

    def overview_context() -> dict[str, Any]:
        with Session(state.engine) as session:
            champ = dashboard.champion(session, name)
            return {
                "performance": dashboard.performance_figure(session, name, options.primary_metric),
                "volume": dashboard.volume_figure(session, name),
                "scores": dashboard.score_figure(session, name, options.window_days),
                "audit": dashboard.audit_rows(session, name),
                "champion": None if champ is None else _card(champ, options),
                "primary_metric": options.primary_metric,
            }

    @app.get("/dashboard", dependencies=secured, include_in_schema=False)
    async def overview() -> HTMLResponse:
        return render("overview.html", page="overview", **await run_in_threadpool(overview_context))

    def drift_context(as_of: str | None) -> dict[str, Any]:
        when = None
        if as_of:
            try:
                when = dt.datetime.fromisoformat(as_of)
            except ValueError:
                raise HTTPException(422, f"as_of {as_of!r} is not an ISO date or time") from None
            when = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
        with Session(state.engine) as session:
            window, rows = dashboard.drift_table(session, name, when)
            return {
                "drift": dashboard.drift_figure(session, name, options.psi_threshold),
                "window": window,
                "rows": rows,
                "psi_threshold": options.psi_threshold,
            }

    @app.get("/dashboard/drift", dependencies=secured, include_in_schema=False)
    async def drift(as_of: str | None = None) -> HTMLResponse:
        return render("drift.html", page="drift", **await run_in_threadpool(drift_context, as_of))

    def models_context() -> dict[str, Any]:
        with Session(state.engine) as session:
            return {
                "versions": dashboard.version_rows(
                    session, name, options.prefect_ui, options.primary_metric
                )
            }

    @app.get("/dashboard/models", dependencies=secured, include_in_schema=False)
    async def models() -> HTMLResponse:
        return render("models.html", page="models", **await run_in_threadpool(models_context))

    def model_context(version: int) -> dict[str, Any]:
        with Session(state.engine) as session:
            try:
                row = repo.get_version(session, name, version)
            except repo.VersionNotFoundError as exc:
                raise HTTPException(404, str(exc)) from None
            history = [
                e for e in dashboard.audit_rows(session, name, limit=500) if e["version"] == version
            ]
            return {"card": _card(row, options), "history": history}

    @app.get("/dashboard/models/{version}", dependencies=secured, include_in_schema=False)
    async def model_page(version: int) -> HTMLResponse:
        return render(
            "model.html", page="models", **await run_in_threadpool(model_context, version)
        )

    @app.get("/dashboard/static/plotly.min.js", dependencies=secured, include_in_schema=False)
    async def plotly_js() -> FileResponse:
        return FileResponse(
            _PLOTLY_JS,
            media_type="text/javascript",
            headers={"Cache-Control": "public, max-age=86400"},
        )


def _card(row: Any, options: DashboardOptions) -> dict[str, Any]:
    card = model_card(row)
    card["flow_run_url"] = dashboard.flow_run_url(options.prefect_ui, row.flow_run_id)
    return card
