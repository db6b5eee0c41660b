"""`make audit`: pip-audit on requirements.lock, with a time limit and a clear verdict.

Runs `pip-audit --requirement requirements.lock --no-deps --disable-pip` (PyPI's JSON API)
and fails when:
  - the service cannot be reached or does not answer in time (a clear message, no hang);
  - a pinned package has a known vulnerability that docs/reliability.md does not list as
    accepted, with its reason, in the table between the `audit-accepted` markers.
A package the service has no record of cannot be audited; that is reported with its count,
and accepted only when the same table lists `not-found` with a reason (the default is to
fail). The figures go to reports/reliability/audit.json.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements.lock"
DOCS = REPO / "docs" / "reliability.md"
REPORT = Path(os.environ.get("KEEL_AUDIT_REPORT", REPO / "reports" / "reliability" / "audit.json"))
TIME_LIMIT = 600  # seconds for the whole audit (about 250 packages)
REQUEST_TIMEOUT = 15  # seconds per request to the service
UNREACHABLE = re.compile(
    r"ConnectionError|ProxyError|ConnectTimeout|ReadTimeout|Max retries exceeded|"
    r"NameResolutionError|Temporary failure in name resolution|timed out",
)


def accepted() -> dict[str, str]:
    """Finding id -> reason, from the table between the markers in docs/reliability.md."""
    text = DOCS.read_text(encoding="utf-8") if DOCS.is_file() else ""
    match = re.search(r"<!-- audit-accepted -->(.*?)<!-- /audit-accepted -->", text, re.S)
    table: dict[str, str] = {}
    for line in (match.group(1) if match else "").splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0] and not set(cells[0]) <= {"-", ":"} and cells[0] != "id":
            table[cells[0]] = cells[-1]
    return {k: v for k, v in table.items() if v}


def say(line: str) -> None:
    sys.stdout.write(line + "\n")


def fail(message: str, figures: dict[str, object]) -> None:
    write(figures | {"verdict": "failed", "message": message})
    sys.stderr.write(f"error: {message}\n")
    sys.exit(2)


def write(figures: dict[str, object]) -> None:
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(figures, indent=2) + "\n")


def main() -> None:
    pinned = [
        line.strip()
        for line in LOCK.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    figures: dict[str, object] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "pinned": len(pinned),
        "service": "pypi",
    }
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "audit.json"
        command = [
            str(Path(sys.executable).parent / "pip-audit"),
            "--requirement",
            str(LOCK),
            "--no-deps",
            "--disable-pip",
            "--progress-spinner",
            "off",
            "--timeout",
            str(REQUEST_TIMEOUT),
            "--format",
            "json",
            "--output",
            str(out),
        ]
        started = time.monotonic()
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=TIME_LIMIT, check=False
            )
        except subprocess.TimeoutExpired:
            fail(
                f"pip-audit did not finish within {TIME_LIMIT} s: pypi.org is not answering; "
                "the lock was not audited",
                figures,
            )
        figures["seconds"] = round(time.monotonic() - started, 1)
        if UNREACHABLE.search(done.stderr):
            reason = next(
                (line for line in reversed(done.stderr.splitlines()) if UNREACHABLE.search(line)),
                "",
            )
            fail(
                f"cannot reach pypi.org's JSON API, the lock was not audited: {reason[-300:]}",
                figures,
            )
        if not out.is_file():
            fail(f"pip-audit failed (exit {done.returncode}): {done.stderr[-1000:]}", figures)
        result = json.loads(out.read_text())

    allowed = accepted()
    deps = result.get("dependencies", [])
    skipped = [d for d in deps if d.get("skip_reason")]
    found = [(d["name"], d["version"], v) for d in deps for v in d.get("vulns", [])]
    audited = len(deps) - len(skipped)
    unaccepted = [
        (name, version, vuln)
        for name, version, vuln in found
        if not ({vuln["id"], *vuln.get("aliases", [])} & set(allowed))
    ]
    figures.update(
        {
            "audited": audited,
            "not_found": len(skipped),
            "not_found_reason": skipped[0]["skip_reason"] if skipped else None,
            "vulnerabilities": [
                {"package": n, "version": v, "id": x["id"], "fix_versions": x["fix_versions"]}
                for n, v, x in found
            ],
            "unaccepted": [f"{n} {v}: {x['id']}" for n, v, x in unaccepted],
        }
    )
    say(f"pip-audit: {len(pinned)} pinned, {audited} audited, {len(found)} known vulnerabilities")
    for name, version, vuln in found:
        state = "accepted" if (name, version, vuln) not in unaccepted else "NOT ACCEPTED"
        fixes = ", ".join(vuln["fix_versions"]) or "no fix yet"
        say(f"  {name} {version}: {vuln['id']} (fixed in {fixes}) [{state}]")
    if unaccepted:
        fail(
            f"{len(unaccepted)} known vulnerabilities are neither fixed nor listed with a reason "
            "in docs/reliability.md: " + "; ".join(figures["unaccepted"]),  # type: ignore[arg-type]
            figures,
        )
    if skipped:
        say(
            f"  {len(skipped)} of {len(pinned)} packages could not be audited: "
            f"{skipped[0]['skip_reason']} (and the like)"
        )
        if "not-found" not in allowed:
            fail(
                f"{len(skipped)} pinned packages could not be audited (the service has no record "
                "of their versions); list `not-found` with a reason in docs/reliability.md to "
                "accept that",
                figures,
            )
        say(f"  accepted in docs/reliability.md: {allowed['not-found']}")
    write(figures | {"verdict": "passed"})


if __name__ == "__main__":
    main()
