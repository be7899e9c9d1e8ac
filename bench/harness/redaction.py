"""Output hygiene: robots' access tokens, signing secrets and URLs never reach the terminal or JSON."""

from __future__ import annotations

import sys

_SECRETS: list[str] = []


def keep_secret(*values: str) -> None:
    """Every later ``redact`` replaces these values with ``***``."""
    _SECRETS.extend(value for value in values if value)


def redact(text: str) -> str:
    for value in _SECRETS:
        text = text.replace(value, "***")
    return text


def progress(message: str) -> None:
    print(f"[bench] {redact(message)}", file=sys.stderr, flush=True)


def tail(text: str, lines: int = 25) -> str:
    return redact("\n".join(text.rstrip().splitlines()[-lines:]))
