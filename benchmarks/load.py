"""A fixed-rate load generator for `keel api` (open loop: requests leave on schedule).

Each request is sent at its scheduled time whatever happened to the ones before, so a slow
server shows up as latency, not as fewer requests (no coordinated omission); latency is
measured from the scheduled time. Only for servers on this machine (loopback addresses).

    .venv/bin/python benchmarks/load.py --url http://127.0.0.1:8000 --key "$KEY" \\
        --body request.json --rate 20 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

__all__ = ["Answer", "LoadReport", "percentile", "run_load"]


@dataclass(frozen=True)
class Answer:
    """One request: when it was due, sent and answered, and what came back."""

    scheduled: float
    sent: float
    ended: float
    status: int  # -1: no HTTP answer (connection error or timeout)
    body: dict[str, Any] | None
    error: str | None = None

    @property
    def latency(self) -> float:
        """Seconds from the scheduled time to the answer."""
        return self.ended - self.scheduled


@dataclass
class LoadReport:
    """What a run did."""

    rate: float
    seconds: float
    answers: list[Answer] = field(default_factory=list)

    @property
    def errors(self) -> list[Answer]:
        """Every answer that is not a 200."""
        return [a for a in self.answers if a.status != 200]

    def summary(self) -> dict[str, Any]:
        """Figures for a report: counts, achieved rate and latency percentiles (ms)."""
        latencies = sorted(a.latency * 1000 for a in self.answers)
        span = max(a.ended for a in self.answers) - min(a.scheduled for a in self.answers)
        return {
            "target_rate_per_s": self.rate,
            "seconds": self.seconds,
            "requests": len(self.answers),
            "errors": len(self.errors),
            "achieved_rate_per_s": round(len(self.answers) / span, 2),
            "p50_ms": round(percentile(latencies, 50), 2),
            "p99_ms": round(percentile(latencies, 99), 2),
            "max_ms": round(latencies[-1], 2),
            "mean_ms": round(statistics.fmean(latencies), 2),
        }


def percentile(ordered: list[float], q: float) -> float:
    """The q-th percentile of sorted values (nearest rank)."""
    rank = max(1, round(q / 100 * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def _loopback_only(url: str) -> None:
    host = urlparse(url).hostname or ""
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"load tests only target this machine (loopback), not {host}")


async def _one(client: httpx.AsyncClient, path: str, body: bytes, scheduled: float) -> Answer:
    sent = time.monotonic()
    try:
        response = await client.post(path, content=body)
        payload = response.json() if response.status_code == 200 else None
        return Answer(scheduled, sent, time.monotonic(), response.status_code, payload)
    except (httpx.HTTPError, ValueError) as exc:
        return Answer(scheduled, sent, time.monotonic(), -1, None, repr(exc))


async def _run(
    url: str, path: str, body: bytes, headers: dict[str, str], rate: float, seconds: float
) -> list[Answer]:
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
    headers = {"content-type": "application/json", **headers}
    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=30, limits=limits
    ) as client:
        start = time.monotonic() + 0.05
        pending = []
        for i in range(int(rate * seconds)):
            scheduled = start + i / rate
            delay = scheduled - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.create_task(_one(client, path, body, scheduled)))
        return list(await asyncio.gather(*pending))


def run_load(
    url: str,
    body: dict[str, Any],
    *,
    rate: float,
    seconds: float,
    headers: dict[str, str] | None = None,
    path: str = "/v1/predict",
) -> LoadReport:
    """POST `body` to `url + path` at `rate` requests per second for `seconds`.

    Args:
        url: The server's base URL (a loopback address).
        body: The JSON request body, sent as is every time.
        rate: Requests per second, on a fixed schedule.
        seconds: How long.
        headers: Extra headers (the API key).
        path: The endpoint.

    Returns:
        Every answer, in the order the requests were scheduled.
    """
    _loopback_only(url)
    data = json.dumps(body).encode()
    answers = asyncio.run(_run(url, path, data, headers or {}, rate, seconds))
    return LoadReport(rate, seconds, answers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--key", default="", help="X-API-Key")
    parser.add_argument("--body", type=Path, required=True, help="a JSON request body")
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    report = run_load(
        args.url,
        json.loads(args.body.read_text()),
        rate=args.rate,
        seconds=args.seconds,
        headers={"X-API-Key": args.key} if args.key else {},
    )
    print(json.dumps(report.summary(), indent=2))


if __name__ == "__main__":
    main()
