"""The 3.x Alerts app's reading of an action's body: what is not a small JSON object is a 4xx
naming why, never a 500 (the whole app runs in tests/e2e/test_alerts_ui.py)."""

from __future__ import annotations

import asyncio

import pytest

pytestmark = pytest.mark.airflow3


def _request(body: bytes, content_type: str = "application/json"):
    from starlette.requests import Request

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/retry",
        "headers": [(b"content-type", content_type.encode())],
    }
    return Request(scope, receive)


def _read(body: bytes, content_type: str = "application/json"):
    from airflow_ext.ui.fastapi_app import _json_body

    return asyncio.run(_json_body(_request(body, content_type)))


@pytest.mark.parametrize(
    "body, content_type, status, detail",
    [
        (b'{"robot_key": "k"}', "application/x-www-form-urlencoded", 415, "JSON body"),
        (b"x" * 5000, "application/json", 413, "at most"),
        (b"{not json", "application/json", 400, "not JSON"),
        # nested deeper than the parser's recursion limit, yet small: RecursionError, not a 500
        (b"[" * 2000 + b"]" * 2000, "application/json", 400, "not JSON"),
        (b"[1, 2]", "application/json", 400, "JSON object"),
    ],
)
def test_a_body_that_is_not_a_small_json_object_is_refused(body, content_type, status, detail):
    from fastapi import HTTPException

    with pytest.raises(HTTPException) as refused:
        _read(body, content_type)
    assert refused.value.status_code == status and detail in refused.value.detail


def test_a_json_object_is_read():
    assert _read(b'{"robot_key": "k", "alert_id": 7}') == {"robot_key": "k", "alert_id": 7}
