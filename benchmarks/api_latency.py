"""Online scoring latency and throughput of `keel api` (a benchmark, not a timed test).

    .venv/bin/python benchmarks/api_latency.py                       # trains the shipped model
    .venv/bin/python benchmarks/api_latency.py --project .           # a project's own champion

Without `--project`, the shipped `params.yaml` is trained on the full hotel data in a temporary
project and registered as its champion (a few minutes on 2 cores); with it, that project's
registered champion is served (after `make demo`, the repository itself). Reports:

- single-record latency (p50, p99) of bare `inplace_predict` on the same model and record
  (the record's features prebuilt as the pandas frame `build_features` returns, and as the
  numpy matrix scoring uses); of what a request does in the API process without HTTP
  (validation, outcome history, matrix, prediction, reason codes); and of `POST /v1/predict`
  over HTTP on localhost (one worker, keep-alive, one request at a time, prediction logging
  on as shipped), from the standard library's thin `http.client` (the server's latency) and
  from httpx (what a Python caller sees: httpx's own work adds 1 to 2 ms on these cores);
  each with exact TreeSHAP reason codes (shipped) and with approximate ones
  (`score.reason_method: approx`, served from a params file written beside the project's
  for the run and removed after);
- requests per second with 1 and 2 uvicorn workers (exact TreeSHAP), single-record requests
  from concurrent keep-alive clients. The load generator runs on the same machine and takes
  CPU from the server: on 2 cores that is the ceiling, and the figures say so.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import http.client
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import yaml
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from keel.config import load_params
from keel.db import open_database
from keel.features import build_features
from keel.history import HistoryIndex, settings_from_spec
from keel.layout import STAGES, ProjectPaths
from keel.matrix import build_matrix
from keel.model import load_bundle
from keel.registry import repository as repo
from keel.registry.store import ArtifactStore
from keel.scoring import score_matrix
from keel.serving.holder import LoadedModel
from keel.serving.schema import build_record_schema
from keel.settings import KeelSettings
from tasks.production import load_records

REPO = Path(__file__).resolve().parents[1]
KEY = "benchmark-key"
HEADERS = {"X-API-Key": KEY, "content-type": "application/json"}


def _percentiles(samples: list[float]) -> tuple[float, float]:
    p50, p99 = np.percentile(np.asarray(samples) * 1000, [50, 99])
    return float(p50), float(p99)


def _timed(fn: Callable[[], object], n: int) -> tuple[float, float]:
    for _ in range(min(200, n)):
        fn()
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return _percentiles(samples)


def _prepare(workdir: Path) -> Path:
    """Train the shipped params on the full data and register the model as champion."""
    from tasks import stages

    root = workdir / "project"
    paths = ProjectPaths(root)
    if (paths.model_dir / "model.ubj").is_file():
        if (paths.state_dir / "keel.db").is_file():
            return root  # trained and registered by an earlier run with this --workdir
        return _register(root)
    (root / "data/raw").mkdir(parents=True, exist_ok=True)
    (root / "data/raw/hotel_bookings.csv.gz").write_bytes(
        (REPO / "data/raw/hotel_bookings.csv.gz").read_bytes()
    )
    (root / "params.yaml").write_text((REPO / "params.yaml").read_text())
    (root / "expectations").mkdir(exist_ok=True)
    for suite in (REPO / "expectations").iterdir():
        (root / "expectations" / suite.name).write_text(suite.read_text())
    params = load_params(root / "params.yaml")
    started = time.perf_counter()
    for name in STAGES:
        getattr(stages, name).fn(root, params)
    print(f"trained the shipped model in {time.perf_counter() - started:.0f} s")
    return _register(root)


def _register(root: Path) -> Path:
    params = load_params(root / "params.yaml")
    engine, store = _registry(root)
    paths = ProjectPaths(root)
    ref = store.put_bundle(paths.model_dir)
    metadata = json.loads((paths.model_dir / "metadata.json").read_text())
    with Session(engine) as session, session.begin():
        row = repo.register_version(
            session,
            model_name=params.gate.model_name,
            actor="benchmark",
            artifact_uri=ref.uri,
            artifact_sha256=ref.sha256,
            metrics=json.loads(paths.metrics.read_text()),
            params=params.model_dump(mode="json", by_alias=True),
            training_window=metadata["training_window"],
            fingerprints=metadata["data_fingerprint"],
            code_version={},
            libraries=metadata["libraries"],
            device=metadata["device"],
            flow_run_id=None,
        )
        repo.promote(session, params.gate.model_name, row.version, actor="benchmark", reason="")
    return root


def _registry(root: Path) -> tuple[Engine, ArtifactStore]:
    settings = KeelSettings()
    state = ProjectPaths(root).state_dir
    engine = open_database(settings.resolved_database_url(state))
    return engine, ArtifactStore(settings.resolved_artifact_url(state))


def _params_file(root: Path, method: str) -> Path:
    """The project's params file, or a copy beside it with another `score.reason_method`."""
    shipped = root / "params.yaml"
    if load_params(shipped).score.reason_method == method:
        return shipped
    raw = yaml.safe_load(shipped.read_text())
    raw["score"]["reason_method"] = method
    variant = root / f"params-{method}.yaml"  # beside it: its paths are relative to its folder
    variant.write_text(yaml.safe_dump(raw, sort_keys=False))
    return variant


def _start_api(params_file: Path, port: int, workers: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "KEEL_API_KEYS": KEY, "KEEL_PREFECT_UI_URL": "http://127.0.0.1:4200"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "api",
            "--params",
            str(params_file),
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            ready = [
                httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
                for _ in range(workers * 3)
            ]
            if all(ready):
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    process.kill()
    raise RuntimeError("keel api did not become ready")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _sequential(port: int, body: bytes, n: int) -> tuple[float, float]:
    """Latency of one request at a time on one keep-alive connection of the standard
    library's `http.client`: a thin client, so the figure is the server's (what `wrk` or
    `hey` would see), not the client's own parsing (see `_sequential_httpx`)."""
    connection = http.client.HTTPConnection("127.0.0.1", port)

    def call() -> None:
        connection.request("POST", "/v1/predict", body=body, headers=HEADERS)
        response = connection.getresponse()
        text = response.read()
        if response.status != 200:
            raise RuntimeError(text)

    try:
        return _timed(call, n)
    finally:
        connection.close()


def _sequential_httpx(port: int, body: bytes, n: int) -> tuple[float, float]:
    """The same through httpx, a full-featured Python client: what a Python caller sees."""
    with httpx.Client(headers=HEADERS) as client:

        def call() -> None:
            response = client.post(f"http://127.0.0.1:{port}/v1/predict", content=body)
            if response.status_code != 200:
                raise RuntimeError(response.text)

        return _timed(call, n)


async def _throughput(url: str, body: bytes, seconds: float, concurrency: int) -> float:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    done = 0
    async with httpx.AsyncClient(headers=HEADERS, limits=limits, timeout=30) as client:
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                response = await client.post(url, content=body)
                if response.status_code != 200:
                    raise RuntimeError(response.text)
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done / (time.perf_counter() - started)


def main() -> None:
    """Run the benchmark and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, help="serve this project's champion")
    parser.add_argument("--workdir", type=Path, help="where to train (default: a temp folder)")
    parser.add_argument("--requests", type=int, default=2000, help="sequential requests")
    parser.add_argument("--seconds", type=float, default=10.0, help="per throughput run")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="keel-api-bench-"))
    root = args.project.resolve() if args.project else _prepare(workdir)
    params = load_params(root / "params.yaml")
    engine, store = _registry(root)
    with Session(engine) as session:
        champion = repo.get_alias(session, params.gate.model_name, "champion")
    if champion is None:
        raise SystemExit(f"{root} has no champion: run `keel train` there (or omit --project)")
    bundle_dir = Path(tempfile.mkdtemp(prefix="bundle-", dir=workdir)) / "bundle"
    bundle = load_bundle(store.get_bundle(champion.artifact_sha256, bundle_dir))
    bundle.booster.set_param({"device": "cpu", "nthread": 1})
    feed = load_records(root, params)
    record = feed[sorted(bundle.spec.input_columns)].iloc[[5]]
    # The outcome history as the API computes it: an index of the known outcomes built once
    # when the model is loaded, applied to each request as of now.
    settings = settings_from_spec(bundle.spec.history)
    index = None if settings is None else HistoryIndex.build(feed, settings, params.data.target)

    def with_history(frame: pd.DataFrame) -> pd.DataFrame:
        return frame if index is None else index.apply(frame, dt.datetime.now(dt.UTC))

    features = build_features(with_history(record), bundle.spec)
    matrix = build_matrix(with_history(record), bundle.spec)
    payload = json.loads(record.to_json(orient="records", double_precision=15))
    body = json.dumps({"records": payload}).encode()
    # What a request does in the API process, without HTTP: validate the body, build the
    # matrix from the records (outcome history as of now), predict, reason codes.
    schema = build_record_schema(
        bundle.spec, key=params.data.entity_key.name, max_records=params.api.max_records
    )
    served = LoadedModel(
        champion.model_name, champion.version, "", bundle, schema, {}, dt.datetime.now(), index
    )

    def in_process(method: str) -> Callable[[], object]:
        def request() -> object:
            records, as_of = schema.validate_request(json.loads(body))
            return score_matrix(
                bundle,
                served.matrix(records, as_of),
                threshold=params.evaluate.threshold,
                reason_codes=params.score.reason_codes,
                reason_method=method,
            )

        return request

    n = args.requests
    rows = {
        "bare inplace_predict (pandas features)": _timed(
            lambda: bundle.booster.inplace_predict(features), n
        ),
        "bare inplace_predict (numpy matrix)": _timed(
            lambda: bundle.booster.inplace_predict(matrix), n
        ),
        "a request in process, exact TreeSHAP reasons (validation, history, matrix, prediction)": (
            _timed(in_process("shap"), n)
        ),
        "a request in process, approximate reasons (reason_method: approx)": _timed(
            in_process("approx"), n
        ),
    }
    throughput = {}
    server_cpu: dict[str, float] = {}
    for workers, method in ((1, "shap"), (1, "approx"), (2, "shap")):
        port = _free_port()
        params_file = _params_file(root, method)
        process = _start_api(params_file, port, workers)
        url = f"http://127.0.0.1:{port}/v1/predict"
        try:
            if workers == 1:
                before = _cpu_seconds(process.pid)
                label = "exact TreeSHAP" if method == "shap" else "approximate reasons"
                rows[f"POST /v1/predict over HTTP (1 worker, sequential, {label})"] = _sequential(
                    port, body, n
                )
                # CPU the server spent per request (warm-up included): what a request costs
                # on an idle machine, whatever else competes for the cores now.
                server_cpu[method] = (_cpu_seconds(process.pid) - before) / (n + min(200, n)) * 1000
                rows[f"... the same from an httpx client ({label})"] = _sequential_httpx(
                    port, body, n
                )
            if method == "shap":
                throughput[workers] = asyncio.run(
                    _throughput(url, body, args.seconds, args.concurrency)
                )
        finally:
            _stop(process)
            if params_file.name != "params.yaml":
                params_file.unlink()  # the variant written for this run

    print(
        f"\n{dt.date.today()}, {platform.machine()}, {os.cpu_count()} cores, "
        f"model {params.gate.model_name} v{champion.version} "
        f"({bundle.booster.num_boosted_rounds()} trees), one record, {n} calls each; "
        f"1-minute load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after "
        "(other work on the machine slows every figure)\n"
    )
    bare = rows["bare inplace_predict (pandas features)"][0]
    print("| measure | p50 ms | p99 ms | p50 / bare pandas p50 |\n|---|---|---|---|")
    for name, (p50, p99) in rows.items():
        print(f"| {name} | {p50:.3f} | {p99:.3f} | {p50 / bare:.2f} |")
    print(
        "\nserver CPU per sequential request: "
        + ", ".join(f"{cpu:.2f} ms ({method})" for method, cpu in server_cpu.items())
    )
    print(
        f"\n| uvicorn workers | requests/s, exact TreeSHAP ({args.concurrency} clients, "
        f"{args.seconds:g} s) |"
    )
    print("|---|---|")
    for workers, rps in throughput.items():
        print(f"| {workers} | {rps:,.0f} |")


if __name__ == "__main__":
    main()
