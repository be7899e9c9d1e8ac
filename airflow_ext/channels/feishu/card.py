"""The layout of a Feishu interactive card, read without HTTP or Airflow: the local Feishu robot
(which runs in any Python, the benchmarks' driver included) and the Alerts page both read cards."""

from __future__ import annotations

from typing import Any


def card_elements(card: dict[str, Any]) -> list[Any] | None:
    """A card's elements in any layout Feishu accepts: ``elements``, card JSON 2.0's ``body.elements``,
    or the first language of ``i18n_elements``; ``None`` when it has none."""
    if isinstance(card.get("elements"), list):
        return card["elements"]
    body = card.get("body")
    if isinstance(body, dict) and isinstance(body.get("elements"), list):
        return body["elements"]
    i18n = card.get("i18n_elements")
    if isinstance(i18n, dict):
        for elements in i18n.values():
            if isinstance(elements, list):
                return elements
    return None
