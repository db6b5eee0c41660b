"""Write the figures of the latest reliability run into docs/reliability.md.

The reliability tests write reports/reliability/<section>.json as they pass (and `make audit`
writes audit.json); this script renders them between the `<!-- figures -->` and
`<!-- catalogue -->` markers of docs/reliability.md, leaving the rest of the page alone.

    .venv/bin/pytest -m reliability && .venv/bin/python scripts/audit.py
    .venv/bin/python scripts/reliability_report.py
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FIGURES = REPO / "reports" / "reliability"
DOCS = REPO / "docs" / "reliability.md"


def _load(name: str) -> dict[str, Any]:
    path = FIGURES / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _when(*sections: dict[str, Any]) -> str:
    dated = [s for s in sections if s.get("date")]
    if not dated:
        return "not run"
    first = dated[0]
    load = first.get("load_average_1_5_15") or []
    busy = f", load average {load[0]}" if load else ""
    return f"{first['date'][:16].replace('T', ' ')} UTC, {first.get('machine', '?')}{busy}"


def figures() -> str:
    catalogue, kills, races = _load("catalogue"), _load("kills"), _load("races")
    events, load, schema = _load("events"), _load("load"), _load("schemathesis")
    audit, security = _load("audit"), _load("security")
    rows = []
    if catalogue:
        rows.append(
            (
                "bad inputs",
                f"{catalogue['passed']} cases passed of {catalogue['tried']} tried",
                _when(catalogue),
            )
        )
    score, train, drop = (
        kills.get("score", {}),
        kills.get("train", {}),
        kills.get("connection_drop"),
    )
    if score or train:
        rows.append(
            (
                "kills (SIGKILL)",
                f"score: {score.get('kills', 0)} kills at {len(score.get('points', []))} kinds of "
                f"point, {score.get('survived', 0)} survived (final table identical, "
                f"{score.get('predictions', 0)} predictions in {score.get('batches', 0)} batches); "
                f"train: {train.get('kills', 0)} kills, {train.get('survived', 0)} survived",
                _when(kills),
            )
        )
    if drop:
        rows.append(
            ("connection dropped mid-write", f"retried: `{drop['log_line']}`", _when(kills))
        )
    promotions, same = races.get("promotions", {}), races.get("same_batch", {})
    if promotions or same:
        rows.append(
            (
                "races",
                f"{promotions.get('processes', 0)} concurrent promotions on PostgreSQL: "
                f"{promotions.get('champions_after', '?')} champion, "
                f"{promotions.get('alias_moves', '?')} alias moves = "
                f"{promotions.get('audit_promotions', '?')} audited; two score runs of one batch: "
                + ", ".join(
                    f"{b}: {v['batches_written']} batch"
                    for b, v in sorted(same.items())
                    if b != "run"
                ),
                _when(races),
            )
        )
    storm = events.get("storm")
    if storm:
        quiet = (
            f"{storm['cooldown_labelled_events']} events labelled `keel.retrain: cooldown`: "
            f"{storm['runs_started_by_cooldown_labelled_events']} runs; "
            if "cooldown_labelled_events" in storm  # figures of a run before the label
            else ""
        )
        rows.append(
            (
                "event storms",
                f"{storm['storms']} x {storm['events_per_storm']} drift events (in "
                f"{' and '.join(f'{s} s' for s in storm['storm_seconds'])}): "
                f"{storm['retrainings_started']} retrainings; forced one inside the cooldown: "
                f"`{storm['forced_inside_cooldown'][:60]}...`; {quiet}drift events from "
                f"retrainings: {storm['drift_events_emitted_by_retrainings']}",
                _when(events),
            )
        )
    result = load.get("result")
    if result:
        rows.append(
            (
                "load",
                f"{result['requests']} requests at {result['target_rate_per_s']:g}/s for "
                f"{result['seconds']:g} s: {result['errors']} errors, p50 {result['p50_ms']} ms, "
                f"p99 {result['p99_ms']} ms (max {result['max_ms']} ms); swaps "
                f"{', '.join(result['swaps'])} served after "
                f"{', '.join(f'{s} s' for s in result['seconds_to_serve_new_version'])}, "
                f"never back; {result['predictions_logged']} predictions logged",
                _when(load),
            )
        )
    found = schema.get("result")
    if found:
        rows.append(
            (
                "Schemathesis",
                f"{found['cases']} generated requests on {found['operations']} operations: "
                f"{found['failures']} failures",
                _when(schema),
            )
        )
    if audit:
        vulns = audit.get("vulnerabilities", [])
        rows.append(
            (
                "pip-audit",
                f"{audit.get('verdict', '?')}: {audit.get('pinned', '?')} pinned, "
                f"{audit.get('audited', 0)} audited, {len(vulns)} known vulnerabilities, "
                f"{audit.get('not_found', 0)} without a record on the index"
                + (f" ({audit['message']})" if audit.get("message") else ""),
                audit.get("date", "?"),
            )
        )
    if security:
        pickle, checks = security.get("pickle", {}), security.get("checksums", {})
        rows.append(
            (
                "security",
                f"objects unpickled while {len(pickle.get('flows_run', []))} flows ran: "
                f"{pickle.get('objects_unpickled', '?')}; result files written: "
                f"{pickle.get('result_files_written', '?')}; a tampered artifact refused by "
                f"{', '.join(sorted(k for k in checks if k != 'run'))}",
                _when(security),
            )
        )
    lines = ["| what | figure | run |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def catalogue_table() -> str:
    cases = _load("catalogue").get("cases", [])
    lines = ["| area | case | outcome | what the user sees (excerpt) |", "|---|---|---|---|"]
    for case in cases:
        detail = re.sub(r"\s+", " ", case["detail"]).replace("|", "\\|")[:160]
        lines.append(f"| {case['area']} | {case['case']} | {case['outcome']} | `{detail}` |")
    return "\n".join(lines)


def replace(text: str, marker: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- {marker} -->\n).*?(\n<!-- /{marker} -->)", re.S)
    if not pattern.search(text):
        sys.exit(f"error: docs/reliability.md has no <!-- {marker} --> section")
    return pattern.sub(lambda m: m.group(1) + body + m.group(2), text)


def main() -> None:
    text = DOCS.read_text(encoding="utf-8")
    text = replace(text, "figures", figures())
    text = replace(text, "catalogue", catalogue_table())
    DOCS.write_text(text, encoding="utf-8")
    sys.stdout.write(f"wrote the figures of {FIGURES} into {DOCS}\n")


if __name__ == "__main__":
    main()
