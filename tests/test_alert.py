"""The alert model: plain data that round-trips through JSON, built from a failing task instance."""

from __future__ import annotations

import json

from airflow_ext.alert import Alert, AlertKind, clean_text
from tests.test_render import make_alert


def test_round_trips_through_json():
    alert = make_alert(kind=AlertKind.RETRY, map_index=2)

    assert Alert.from_dict(json.loads(json.dumps(alert.to_dict()))) == alert


def test_dedup_key_identifies_one_try_of_one_task_instance():
    first, again = make_alert(), make_alert(exception_message="reported twice")

    assert first.dedup_key == again.dedup_key
    assert make_alert(try_number=4).dedup_key != first.dedup_key
    assert make_alert(map_index=0).dedup_key != make_alert(map_index=1).dedup_key


def test_clean_text_makes_any_input_encodable():
    assert clean_text("ok") == "ok"
    assert clean_text("a\udc80b").encode("utf-8") == "a\ufffdb".encode("utf-8")
    assert clean_text(b"\xff\xfeok").endswith("ok")
    assert clean_text(ValueError("boom")) == "boom"
