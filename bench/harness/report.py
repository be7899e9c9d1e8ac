"""How figures are printed: side-by-side tables, PASS/MISS per target, the JSON of a run."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from .redaction import redact

#: Printed under every report: the targets say how a figure compares, never whether the run failed.
INFORMATIONAL = "Targets are informational; timings on a shared machine vary from run to run."


def ms(value: float) -> str:
    return f"{value:,.1f} ms" if value < 10_000 else f"{value / 1000:,.2f} s"


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(
        c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
    ).rstrip()


def table(header: list[str], rows: list[list[str]]) -> str:
    """The first column left-aligned, the figures right-aligned, a rule under the header."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [_row(header, widths), _row(["-" * w for w in widths], widths)]
    lines += [_row(r, widths) for r in rows]
    return "\n".join(lines)


def verdict(ok: bool, ci: tuple[float, float] | None = None, limit: float | None = None) -> str:
    """PASS/MISS on the point estimate; "(within noise)" when its 95% interval straddles the limit."""
    text = "PASS" if ok else "MISS"
    if ci is not None and limit is not None and ci[0] <= limit < ci[1]:
        text += " (within noise)"
    return text


def paragraph(text: str, **options) -> str:
    return textwrap.fill(text, 100, **options)


def emit(text: str, results: dict, json_file: str | None) -> None:
    """Print the report and, if asked, write every figure and sample as JSON (both redacted)."""
    print(redact(text), flush=True)
    if json_file:
        Path(json_file).write_text(
            redact(json.dumps(results, indent=2, sort_keys=True, default=str)) + "\n", encoding="utf-8"
        )
