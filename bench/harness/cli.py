"""What every benchmark's command line shares: its options and how a run ends."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import BenchError
from .lines import LINES, default_line
from .redaction import redact
from .report import emit


def parser(description: str, quick_help: str) -> argparse.ArgumentParser:
    """--airflow-line, --quick and --json, as every benchmark takes them."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--airflow-line",
        choices=sorted(LINES),
        default=default_line(),
        help="which Airflow line to measure (default: DINGBOT_AIRFLOW_LINE, else 3)",
    )
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--json", metavar="FILE", help="also write every figure and sample to FILE as JSON")
    return parser


def run_benchmark(measure: Callable[[Path], tuple[str, dict]], json_file: str | None, prefix: str) -> int:
    """``measure(tmp)`` gives the report and the results; both are printed redacted. The exit status
    is 1 only if the benchmark could not run: a missed target is a figure, not a failure."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        text, results = measure(tmp)
    except BenchError as err:
        print(f"benchmark could not run: {redact(str(err))}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    emit(text, results, json_file)
    return 0
