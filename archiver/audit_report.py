"""`audit`'s result for people: the screen's lines, and a report file (`--report F.json|F.html`).

The JSON is the data; the HTML is the same data laid out for an auditor, in one file with its
CSS inline and no script, so it opens anywhere, offline, and can be filed as it is. Everything
in it that came from the bucket (keys, reasons quoting manifests) is escaped: a manifest is data
an attacker may have edited, and a report must not become their page.

Keys are printed relative to the prefix, as the `.sha256` files name them, so a line can be
checked against them (or pasted after the prefix to find the object).
"""

from __future__ import annotations

import html
import json
import re
from collections import Counter
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any

from archiver.audit import Method, Result
from archiver.chain import Finding, Mark
from archiver.manifest import parse_key
from archiver.models import format_time

SCHEMA = "cradle-archiver.audit/1"
_DAY_FOLDER = re.compile(r"^(\d{4})/(\d{2})/(\d{2})/")
_WORDS = {
    Mark.MATCH: "matching",
    Mark.MISSING: "missing",
    Mark.UNLISTED: "unlisted",
    Mark.DIFFERS: "differing",
    Mark.ERROR: "errors",
}


def relative(prefix: str, key: str) -> str:
    return key[len(prefix) :] if prefix and key.startswith(prefix) else key


def text_lines(result: Result) -> list[str]:
    """One line per object, as `rclone check --combined` prints, then the summary line."""
    lines = []
    for f in result.lines():
        line = f"{f.mark.value} {relative(result.prefix, f.key)}"
        lines.append(f"{line}  {'; '.join(f.reasons)}" if f.reasons else line)
    return [*lines, summary(result)]


def summary(result: Result) -> str:
    counts = Counter(f.mark for f in result.lines())
    marks = ", ".join(f"{counts[m]} {_WORDS[m]}" for m in Mark)
    methods = Counter(c.method for c in result.recordings)
    chain = result.chain
    head = chain.head
    link = (
        f"chain {chain.manifests[0].manifest.sequence}-{head.manifest.sequence}"
        f" {'intact' if chain.intact else 'BROKEN'}, head {head.sha256[:12]}"
        if head
        else "no manifests"
    )
    return (
        f"audit {'clean' if result.problems == 0 else 'FAILED'}: {sum(counts.values())} objects:"
        f" {marks} ({link}; {len(result.recordings)} recordings in {len(result.days)} sealed days,"
        f" {methods[Method.CHECKSUM]} proven by S3's checksum, {methods[Method.READ]} read;"
        f" signatures: {chain.signatures.value})"
    )


def data(result: Result) -> dict[str, Any]:
    """The report as data: what `--report F.json` writes and the HTML shows."""
    options = result.options
    return {
        "schema": SCHEMA,
        "clean": result.problems == 0,
        "scope": {
            "bucket": result.bucket,
            "prefix": result.prefix,
            "endpoint": result.endpoint,
            "from": _day(options.since),
            "until": _day(options.until),
            "first_day": _day(result.days[0] if result.days else None),
            "last_day": _day(result.days[-1] if result.days else None),
            "sealed_days": len(result.days),
            "started_at": format_time(result.started_at),
            "finished_at": format_time(result.finished_at),
            "read_data_percent": options.read_percent,
            "read_data_seed": options.seed if options.read_percent else None,
            "bodies_read_for_sample": result.sampled,
            "public_key": options.verifier is not None,
        },
        "chain": _chain(result),
        "summary": {m.value: n for m, n in _counts(result.lines()).items()},
        "verification": {
            str(m): n for m, n in Counter(c.method for c in result.recordings).items()
        },
        "days": _days(result),
        "retention": _retention(result),
        "problems": [
            {
                "mark": f.mark.value,
                "key": relative(result.prefix, f.key),
                "reasons": list(f.reasons),
            }
            for f in result.lines()
            if f.mark is not Mark.MATCH
        ],
    }


def _chain(result: Result) -> dict[str, Any]:
    chain, head = result.chain, result.chain.head
    return {
        "intact": chain.intact,
        "manifests": len(chain.manifests),
        "first_sequence": chain.manifests[0].manifest.sequence if head else None,
        "last_sequence": head.manifest.sequence if head else None,
        "head_key": relative(result.prefix, head.key) if head else None,
        "head_sha256": head.sha256 if head else None,
        "signatures": chain.signatures.value,
        "versions_checked": chain.versions_checked,
    }


def _counts(findings: list[Finding]) -> dict[Mark, int]:
    counts = Counter(f.mark for f in findings)
    return {m: counts[m] for m in Mark}


def _days(result: Result) -> list[dict[str, Any]]:
    rows: dict[date, dict[str, Any]] = {
        d: {"day": d.isoformat(), "recordings": 0, "bytes": 0, "verified": 0, "problems": 0}
        for d in result.days
    }
    for c in result.recordings:
        row = rows.get(c.day)
        if row is None:
            continue
        row["recordings"] += 1
        row["bytes"] += c.size
        row["verified"] += c.finding.mark is Mark.MATCH
    for f in result.lines():
        day = _day_of(result.prefix, f.key)
        if f.mark is not Mark.MATCH and day in rows:
            rows[day]["problems"] += 1
    return [rows[d] for d in sorted(rows)]


def _day_of(prefix: str, key: str) -> date | None:
    name = parse_key(prefix, key)
    if name is not None:
        return name.day
    match = _DAY_FOLDER.match(relative(prefix, key))
    if match is None:
        return None
    try:
        return date(*(int(part) for part in match.groups()))
    except ValueError:
        return None


def _retention(result: Result) -> dict[str, Any]:
    present = [c for c in result.recordings if c.finding.mark is not Mark.MISSING]
    dates = [c.retain_until for c in present if c.retain_until is not None]
    return {
        "modes": dict(Counter(c.lock_mode or "none" for c in present)),
        "earliest_retain_until": _time(min(dates) if dates else None),
        "latest_retain_until": _time(max(dates) if dates else None),
        "locked_short": sum(c.locked_short for c in present),
    }


def write(result: Result, path: Path) -> None:
    """`--report`: JSON for a `.json` path, HTML for `.html`/`.htm`."""
    found = data(result)
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(found, indent=2, sort_keys=True) + "\n")
    else:
        path.write_text(render_html(found))


def report_kind(path: Path) -> str | None:
    """ "json" or "html" by the extension, or None for any other."""
    suffix = path.suffix.lower()
    return {".json": "json", ".html": "html", ".htm": "html"}.get(suffix)


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:72em;
color:#1d2330;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid
#d5d9e0;padding-bottom:.2em}
.verdict{display:inline-block;padding:.3em .8em;border-radius:4px;font-weight:600;color:#fff}
.clean{background:#1f7a3d}.failed{background:#b42318}
table{border-collapse:collapse;width:100%;margin:.5em 0}
th,td{text-align:left;padding:.3em .6em;border-bottom:1px solid #e4e7ec;vertical-align:top}
th{background:#f2f4f7;font-weight:600}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1.2em}dt{color:#555}dd{margin:0}
code{font:12.5px ui-monospace,Menlo,Consolas,monospace;word-break:break-all}
.mark{font:600 14px ui-monospace,monospace;text-align:center;width:1.5em}
tr.bad td{background:#fef3f2}.ok{color:#1f7a3d}.bad{color:#b42318}
"""


def render_html(found: dict[str, Any]) -> str:
    """One self-contained page: inline CSS, no script, every bucket-given value escaped."""
    scope, chain = found["scope"], found["chain"]
    verdict = "clean" if found["clean"] else "failed"
    title = f"Audit of s3://{scope['bucket']}/{scope['prefix']}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p><span class="verdict {verdict}" id="verdict">{verdict.upper()}</span> '
        f"{_summary_text(found['summary'])}</p>",
        "<h2>Scope</h2>",
        _pairs(_scope_pairs(scope)),
        "<h2>How the recordings' bytes were proven</h2>",
        _pairs(_verification_pairs(found)),
        "<h2>Manifest chain</h2>",
        _pairs(_chain_pairs(chain)),
        "<h2>Days</h2>",
        _table(
            "days",
            ["day", "recordings", "bytes", "verified", "problems"],
            [
                [d["day"], d["recordings"], d["bytes"], d["verified"], d["problems"]]
                for d in found["days"]
            ],
            bad=lambda row: bool(row[4]),
        ),
        "<h2>Retention</h2>",
        _pairs(_retention_pairs(found["retention"])),
        f"<h2>Problems ({len(found['problems'])})</h2>",
        _problems(found["problems"]),
        f"<p><small>{_e(SCHEMA)}; the same data: <code>--report FILE.json</code></small></p>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _summary_text(counts: dict[str, int]) -> str:
    return ", ".join(
        f"{n} {_WORDS[Mark(mark)]} (<code>{_e(mark)}</code>)" for mark, n in counts.items()
    )


def _scope_pairs(scope: dict[str, Any]) -> list[tuple[str, Any]]:
    read = scope["read_data_percent"]
    return [
        ("bucket", scope["bucket"]),
        ("prefix", scope["prefix"] or "(none)"),
        ("endpoint", scope["endpoint"] or "AWS S3"),
        ("sealed days", f"{scope['first_day']} to {scope['last_day']} ({scope['sealed_days']})"),
        ("--from / --until", f"{scope['from'] or 'first'} / {scope['until'] or 'last'}"),
        ("audit started", scope["started_at"]),
        ("audit finished", scope["finished_at"]),
        (
            "bodies read",
            f"{read:g} % ({scope['bodies_read_for_sample']} bodies, seed {scope['read_data_seed']})"
            if read
            else "none chosen (S3's checksums prove the bytes; bodies without one are read)",
        ),
        ("public key", "given" if scope["public_key"] else "not given"),
    ]


def _verification_pairs(found: dict[str, Any]) -> list[tuple[str, Any]]:
    methods = found["verification"]
    return [
        ("by S3's ChecksumSHA256", methods.get(Method.CHECKSUM, 0)),
        ("body read and hashed", methods.get(Method.READ, 0)),
        ("not proven (missing or differing)", methods.get(Method.NONE, 0)),
    ]


def _chain_pairs(chain: dict[str, Any]) -> list[tuple[str, Any]]:
    return [
        ("status", "intact" if chain["intact"] else "BROKEN (see the problems)"),
        ("manifests", chain["manifests"]),
        ("sequences", f"{chain['first_sequence']} to {chain['last_sequence']}"),
        ("head", chain["head_key"]),
        ("head SHA-256", chain["head_sha256"]),
        ("signatures", chain["signatures"]),
        (
            "manifest versions",
            "listed and checked (each file written once, none hidden)"
            if chain["versions_checked"]
            else "not listed (no s3:ListBucketVersions)",
        ),
    ]


def _retention_pairs(retention: dict[str, Any]) -> list[tuple[str, Any]]:
    modes = ", ".join(f"{mode}: {n}" for mode, n in sorted(retention["modes"].items()))
    return [
        ("lock modes", modes or "none"),
        ("earliest retain-until", retention["earliest_retain_until"] or "none"),
        ("latest retain-until", retention["latest_retain_until"] or "none"),
        ("locked short", retention["locked_short"]),
    ]


def _problems(problems: list[dict[str, Any]]) -> str:
    if not problems:
        return '<p class="ok" id="no-problems">None: every object is as the manifests list it.</p>'
    rows = [[p["mark"], p["key"], "; ".join(p["reasons"])] for p in problems]
    return _table("problems", ["", "key", "why"], rows, bad=lambda row: True)


def _pairs(pairs: list[tuple[str, Any]]) -> str:
    items = "".join(f"<dt>{_e(k)}</dt><dd><code>{_e(v)}</code></dd>" for k, v in pairs)
    return f"<dl>{items}</dl>"


def _table(
    name: str, header: list[str], rows: list[list[Any]], bad: Callable[[list[Any]], bool]
) -> str:
    numeric = [bool(rows) and isinstance(value, int) for value in (rows[0] if rows else header)]
    head = "".join(
        f'<th class="n">{_e(h)}</th>' if n else f"<th>{_e(h)}</th>"
        for h, n in zip(header, numeric, strict=True)
    )
    body = []
    for row in rows:
        cells = "".join(_cell(value) for value in row)
        body.append(f'<tr class="{"bad" if bad(row) else ""}">{cells}</tr>')
    return (
        f'<table id="{name}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    )


def _cell(value: Any) -> str:
    if isinstance(value, int):
        return f'<td class="n">{value:,}</td>'
    if value in {m.value for m in Mark}:
        return f'<td class="mark">{_e(value)}</td>'
    return f"<td><code>{_e(value)}</code></td>"


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _day(value: date | None) -> str | None:
    return value.isoformat() if value else None


def _time(value: datetime | None) -> str | None:
    return format_time(value) if value else None
