"""How the messages of the patch commands list things: ``a, b and c``, ``2 patches``, ``a.py is``."""

from __future__ import annotations

from collections.abc import Sequence


def joined(items: Sequence[str], conjunction: str) -> str:
    """``a`` / ``a and b`` / ``a, b and c``."""
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {conjunction} {items[-1]}"


def plural(count: int, word: str) -> str:
    if count == 1:
        return f"{count} {word}"
    return f"{count} {word}{'es' if word.endswith(('s', 'sh', 'ch', 'x')) else 's'}"


def are(paths: Sequence[str]) -> str:
    """``a.py is`` / ``a.py, b.py are``."""
    return f"{', '.join(paths)} {'is' if len(paths) == 1 else 'are'}"
