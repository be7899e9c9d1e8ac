"""The alert model: plain data that round-trips through JSON, built from a failing task instance."""

from __future__ import annotations

import json
import logging

from airflow_ext.alert import Alert, AlertKind, clean_text, exception_fields
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


def test_the_failure_text_goes_through_the_secrets_masker(monkeypatch):
    from airflow_ext.airflow_port import airflow

    monkeypatch.setattr(airflow(), "redact", lambda text: text.replace("hunter2", "***"))

    kind, message, traceback = exception_fields(PermissionError("etl:hunter2 refused"))

    assert (kind, message) == ("PermissionError", "etl:*** refused")
    assert exception_fields("killed: hunter2")[1] == "killed: ***"


def test_a_failing_masker_keeps_the_alert_and_says_so_once(monkeypatch, caplog):
    from airflow_ext import problems
    from airflow_ext.airflow_port import airflow

    def broken(text):
        raise RuntimeError("Logging Configuration Error! No SecretsMasker found!")

    monkeypatch.setattr(airflow(), "redact", broken)
    problems.forget()

    with caplog.at_level(logging.ERROR, logger="airflow_ext.alert"):
        assert exception_fields("etl refused")[1] == "etl refused"
        assert exception_fields("etl refused again")[1] == "etl refused again"
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(said) == 1 and "unmasked" in said[0] and "RuntimeError" in said[0], said
