"""The outbox route's contract: one alert per request, every field checked, only for its own try."""

from __future__ import annotations

import json

import pytest

from airflow_ext.alert import Alert, AlertKind
from airflow_ext.outbox import api
from airflow_ext.outbox.api import Refused, TaskTry, bearer_token, check_same_try, parse_alert

ALERT = {
    "kind": "failure",
    "dag_id": "d",
    "task_id": "t",
    "run_id": "r",
    "try_number": 2,
    "max_tries": 1,
    "map_index": -1,
    "exception_type": "ValueError",
    "exception_message": "boom",
    "traceback": "Traceback ...",
}


def body(**changes) -> bytes:
    return json.dumps({"alert": {**ALERT, **changes}}).encode()


def test_a_whole_alert_is_parsed_as_sent():
    alert = parse_alert(body())
    assert alert == Alert.from_dict(ALERT)
    assert alert.kind is AlertKind.FAILURE


@pytest.mark.parametrize(
    "raw, words",
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (json.dumps([ALERT]).encode(), "one alert"),
        (json.dumps({"alert": ALERT, "more": 1}).encode(), "one alert"),
        (json.dumps({"alerts": [ALERT]}).encode(), "one alert"),
        (body(kind="success"), "alert.kind"),
        (body(dag_id=""), "alert.dag_id must be a non-empty string"),
        (body(task_id=7), "alert.task_id must be a non-empty string"),
        (body(run_id="r" * 251), "alert.run_id is longer than 250"),
        (body(hostname=["h"]), "alert.hostname must be a string"),
        (body(log_url="x" * 2001), "alert.log_url is longer than 2000"),
        (body(try_number="2"), "alert.try_number must be an integer"),
        (body(try_number=True), "alert.try_number must be an integer"),
        (body(max_tries=-1), "alert.max_tries must be an integer"),
        (body(map_index=-2), "alert.map_index must be an integer"),
        (body(extra_field="x"), "unknown alert fields: extra_field"),
    ],
)
def test_anything_but_one_well_formed_alert_is_refused(raw, words):
    with pytest.raises(Refused) as refused:
        parse_alert(raw)
    assert refused.value.status == 422
    assert words in refused.value.detail


def task_try(**changes) -> TaskTry:
    fields = {
        "dag_id": "d",
        "task_id": "t",
        "run_id": "r",
        "map_index": -1,
        "try_number": 2,
        "state": "failed",
    }
    return TaskTry(**{**fields, **changes})


@pytest.mark.parametrize(
    "kind, found, status",
    [
        ("failure", task_try(), None),
        ("retry", task_try(state="up_for_retry"), None),
        # A retried try Airflow 3 has moved to its history is recorded there as failed.
        ("retry", task_try(archived=True), None),
        ("failure", task_try(archived=True), None),
        ("failure", None, 404),
        ("failure", task_try(task_id="other"), 403),
        ("failure", task_try(dag_id="other"), 403),
        ("failure", task_try(run_id="other"), 403),
        ("failure", task_try(map_index=3), 403),
        ("failure", task_try(try_number=3), 403),
        ("failure", task_try(state="up_for_retry"), 409),
        ("retry", task_try(state="failed"), 409),
        ("failure", task_try(state="success"), 409),
        ("failure", task_try(state="running"), 409),
        ("failure", task_try(state="success", archived=True), 409),
    ],
)
def test_only_the_tokens_own_try_that_failed_may_queue(kind, found, status):
    alert = Alert.from_dict({**ALERT, "kind": kind})
    if status is None:
        check_same_try(alert, found)
        return
    with pytest.raises(Refused) as refused:
        check_same_try(alert, found)
    assert refused.value.status == status


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Basic dXNlcjpwYXNz", "token abc"])
def test_a_request_without_a_bearer_token_is_unauthenticated(header):
    with pytest.raises(Refused) as refused:
        bearer_token(header)
    assert refused.value.status == 401


def test_the_bearer_token_is_taken_as_given():
    assert bearer_token("Bearer abc.def.ghi") == "abc.def.ghi"
    assert bearer_token("bearer abc") == "abc"


class FakeRequest:
    def __init__(self, chunks, content_length=None):
        self.headers = {} if content_length is None else {"content-length": str(content_length)}
        self._chunks = chunks

    async def stream(self):
        for chunk in self._chunks:
            yield chunk


@pytest.mark.parametrize(
    "chunks, declared, refused",
    [
        ([b"x" * 100], 100, False),
        ([b"x" * api.MAX_REQUEST_BYTES], None, False),
        ([b"x" * 10], api.MAX_REQUEST_BYTES + 1, True),  # refused on the header, before reading
        ([b"x" * 40_000, b"x" * 40_000], None, True),  # chunked: refused as it passes the bound
        ([b"x"], "12abc", True),
    ],
)
def test_a_body_is_read_up_to_the_bound(chunks, declared, refused):
    import asyncio

    request = FakeRequest(chunks, declared)
    if not refused:
        assert asyncio.run(api.read_bounded(request)) == b"".join(chunks)
        return
    with pytest.raises(Refused) as error:
        asyncio.run(api.read_bounded(request))
    assert error.value.status == 413
