"""The table `make bench` prints, and the same figures as JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.scenarios import Outcome

MB = 1_000_000  # memory targets are in MB (10^6 bytes), the stricter reading of "80 MB"


@dataclass(frozen=True)
class Row:
    figure: str
    archiver: str = ""
    naive: str = ""
    bound: str = ""
    ratio: str = ""
    target: str = ""
    met: bool | None = None  # None: a figure without a target

    @property
    def mark(self) -> str:
        return "" if self.met is None else ("✓" if self.met else "✗")


@dataclass(frozen=True)
class Section:
    title: str
    rows: list[Row]


HEADINGS = ("figure", "this archiver", "naive peer", "bound", "ratio", "target", "")


def render(sections: list[Section], preamble: list[str], notes: list[str]) -> str:
    cells = [_cells(r) for s in sections for r in s.rows]
    widths = [max(len(c[i]) for c in [list(HEADINGS), *cells]) for i in range(len(HEADINGS))]

    def line(values: list[str] | tuple[str, ...]) -> str:
        return "  ".join(
            v.ljust(w) if i == 0 else v.rjust(w) if i < 5 else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ).rstrip()

    rule = "-" * len(line(["x" * w for w in widths]))
    out = [*preamble, rule, line(HEADINGS), rule]
    for section in sections:
        out.append(section.title)
        out += [line(_cells(r)) for r in section.rows]
    out += [rule, *notes]
    return "\n".join(out)


def _cells(r: Row) -> list[str]:
    return [f"  {r.figure}", r.archiver, r.naive, r.bound, r.ratio, r.target, r.mark]


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def megabytes(value: int | None) -> str:
    return "-" if value is None else f"{value / MB:.1f}"


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def objects(outcome: Outcome) -> str:
    if outcome.archived_ok is None:
        return "-"
    return f"{outcome.archived_ok}/{outcome.expected}"


def targets(sections: list[Section]) -> list[dict[str, Any]]:
    return [{"section": s.title.strip(), **asdict(r)} for s in sections for r in s.rows if r.target]
