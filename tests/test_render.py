"""Rendering: the header survives, the detail is cut to the byte budget, never inside a character."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_ext.alert import Alert, AlertKind
from airflow_ext.render import TRUNCATED, RenderedMessage, render_markdown, render_title, utf8_head, utf8_tail

pytestmark = pytest.mark.version_free


def make_alert(**overrides) -> Alert:
    fields = dict(
        kind=AlertKind.FAILURE,
        dag_id="orders_daily",
        task_id="load_orders",
        run_id="scheduled__2026-11-20T00:00:00+00:00",
        try_number=3,
        max_tries=2,
        map_index=-1,
        logical_date="2026-11-20T00:00:00+00:00",
        hostname="worker-7",
        log_url="http://airflow.example/dags/orders_daily/grid?tab=logs",
        exception_type="ValueError",
        exception_message="orders table is empty",
        traceback=(
            'Traceback (most recent call last):\n  File "dag.py", line 3\nValueError: orders table is empty'
        ),
    )
    fields.update(overrides)
    return Alert(**fields)


def json_bytes(message: RenderedMessage) -> int:
    return len(json.dumps({"title": message.title, "text": message.text}, ensure_ascii=False).encode())


def test_header_names_everything_an_on_call_engineer_needs():
    message = render_markdown(make_alert(map_index=4))

    for expected in (
        "orders_daily",
        "load_orders [map index 4]",
        "scheduled__2026-11-20T00:00:00+00:00",
        "2026-11-20T00:00:00+00:00",
        "**Try:** 3 of 3 (final failure)",
        "worker-7",
        "**ValueError:** orders table is empty",
        "[Open the task log](http://airflow.example/dags/orders_daily/grid?tab=logs)",
    ):
        assert expected in message.text
    assert message.title == "Airflow failed: orders_daily.load_orders"


def test_retry_is_told_apart_from_final_failure():
    message = render_markdown(make_alert(kind=AlertKind.RETRY, try_number=1))

    assert "**Try:** 1 of 3 (will retry)" in message.text
    assert message.title.startswith("Airflow retry:")


def test_keyword_is_in_title_and_text_once():
    message = render_markdown(make_alert(), keyword="ETL-Alarm")

    assert message.title.startswith("[ETL-Alarm] ")
    assert "ETL-Alarm" in message.text.splitlines()[0]
    assert render_title(make_alert(), keyword="Airflow").count("Airflow") == 1


def test_mentions_are_written_into_the_text():
    message = render_markdown(make_alert(), at_mobiles=("13800000000", "13900000000"))

    assert message.text.rstrip().endswith("@13800000000 @13900000000")


def test_cjk_traceback_is_cut_by_bytes_keeping_header_footer_and_tail():
    traceback = "\n".join(f"第{i}行：数据库连接失败" for i in range(5000)) + "\nValueError: 最后一行"
    alert = make_alert(traceback=traceback)
    limit = 6000

    message = render_markdown(alert, at_mobiles=("13800000000",), fits=lambda m: json_bytes(m) <= limit)

    assert json_bytes(message) <= limit
    assert json_bytes(message) > limit - 200, "the budget is used, not wasted"
    assert "**Try:** 3 of 3 (final failure)" in message.text
    assert "@13800000000" in message.text and "Open the task log" in message.text
    assert TRUNCATED in message.text
    assert "ValueError: 最后一行" in message.text, "the raising line (tail) is kept"
    assert "第0行" not in message.text


def test_huge_message_is_cut_at_its_end_when_even_it_does_not_fit():
    alert = make_alert(exception_message="错" * 1_000_000, traceback="x\n" * 10)

    message = render_markdown(alert, fits=lambda m: json_bytes(m) <= 20_000)

    assert json_bytes(message) <= 20_000
    assert "**ValueError:** 错" in message.text and TRUNCATED in message.text


@given(st.text(), st.integers(min_value=0, max_value=400))
def test_utf8_cuts_are_prefixes_and_suffixes_within_budget(text, budget):
    head, tail = utf8_head(text, budget), utf8_tail(text, budget)

    assert text.startswith(head) and text.endswith(tail)
    assert len(head.encode()) <= budget and len(tail.encode()) <= budget
    # maximal: one more character would not fit
    if head != text:
        assert len(text[: len(head) + 1].encode()) > budget


@settings(max_examples=60, deadline=None)
@given(
    message=st.text(st.characters(blacklist_categories=("Cs",)), max_size=3000),
    traceback=st.text(st.characters(blacklist_categories=("Cs",)), max_size=6000),
    limit=st.integers(min_value=1500, max_value=9000),
)
def test_rendered_message_always_fits_and_keeps_the_header(message, traceback, limit):
    alert = make_alert(exception_message=message, traceback=traceback)
    header = render_markdown(make_alert(exception_message="", traceback=None)).text.split("\n\n")[0]

    rendered = render_markdown(alert, fits=lambda m: json_bytes(m) <= limit)

    assert json_bytes(rendered) <= limit
    assert rendered.text.startswith(header)
    rendered.text.encode("utf-8")  # valid UTF-8, no half characters
