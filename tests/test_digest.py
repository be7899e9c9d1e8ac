"""Digests: many alerts packed, in order, into few DingTalk messages, each within the real body limit."""

from __future__ import annotations

import re
import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_ext.alert import Alert, AlertKind
from airflow_ext.channels.dingtalk import MAX_BODY_BYTES, DingTalkRobot, encode_body
from airflow_ext.config import DingTalkSettings
from airflow_ext.digest import CUT, Digest, digest_msg_uuid, render_digests, short_log_url
from airflow_ext.render import RenderedMessage, escape_markdown
from tests.test_render import make_alert

pytestmark = pytest.mark.version_free

DAGS = ("orders_daily", "billing", "customer_sync", "warehouse_export", "ml_feature_build")
RUNS = tuple(f"scheduled__2026-11-{day}T00:00:00+00:00" for day in (18, 19, 20))
MOBILES = ("13800000000", "13900000000")
#: The msgUuid is chosen after rendering; the size check counts one of its final length.
UUID_PLACEHOLDER = "0" * 32


def robot_for(keyword: str | None = None, at_mobiles: tuple[str, ...] = ()) -> DingTalkRobot:
    settings = DingTalkSettings(
        bot_url="http://127.0.0.1:1/robot/send?access_token=x", keyword=keyword, at_mobiles=at_mobiles
    )
    return DingTalkRobot(settings)


def fits_for(robot: DingTalkRobot, limit: int = MAX_BODY_BYTES):
    def fits(message: RenderedMessage) -> bool:
        return len(encode_body(robot.payload(message, UUID_PLACEHOLDER))) <= limit

    return fits


def body(robot: DingTalkRobot, digest: Digest) -> bytes:
    """The request body exactly as it will be sent."""
    return encode_body(robot.payload(digest.message, digest_msg_uuid(digest)))


def log_url(dag: str, task: str) -> str:
    return (
        f"http://localhost:8080/dags/{dag}/grid?dag_run_id=scheduled__2026-11-20T00%3A00%3A00%2B00%3A00"
        f"&task_id={task}&map_index=3&base_date=2026-11-20T00%3A00%3A00%2B0000&tab=logs"
    )


def realistic_alerts(n: int) -> list[Alert]:
    alerts = []
    for i in range(n):
        dag, task = DAGS[i % len(DAGS)], f"transform_partition_{i}"
        alerts.append(
            make_alert(
                kind=AlertKind.RETRY if i % 3 else AlertKind.FAILURE,
                dag_id=dag,
                task_id=task,
                run_id=RUNS[(i // 7) % len(RUNS)],
                map_index=i % 5 - 1,
                try_number=1 if i % 3 else 3,
                log_url=log_url(dag, task),
            )
        )
    return alerts


def flatten(digests: list[Digest]) -> list[Alert]:
    return [alert for digest in digests for alert in digest.alerts]


def blocks(digest: Digest) -> list[str]:
    return digest.message.text.split("\n\n")


def parsed_counts(digest: Digest) -> Counter:
    return Counter({dag: int(n) for dag, n in re.findall(r"\*\*(.+?)\*\* (\d+)", blocks(digest)[1])})


def entry_line(alert: Alert) -> str:
    map_part = f" [map index {alert.map_index}]" if alert.map_index >= 0 else ""
    marker = "will retry" if alert.is_retry else "failed"
    # ids are shown escaped: whatever they hold, it shows as written and takes no effect
    attempt = f"try {alert.try_number} of {alert.attempts_allowed}"
    return f"- {escape_markdown(alert.task_id)}{map_part} · {attempt} · {marker}"


def test_1000_alerts_pack_into_few_full_digests_within_the_body_limit():
    robot = robot_for(keyword="ETL-Alarm", at_mobiles=MOBILES)
    alerts = realistic_alerts(1000)

    digests = render_digests(alerts, keyword="ETL-Alarm", at_mobiles=MOBILES, fits=fits_for(robot))

    sizes = [len(body(robot, digest)) for digest in digests]
    assert all(size <= MAX_BODY_BYTES for size in sizes)
    assert len(digests) <= 20, "a minute's worth of robot messages is enough for 1000 alerts"
    # Greedy: no digest could have taken the next alert too.
    for digest, following in zip(digests, digests[1:]):
        more = render_digests(
            [*digest.alerts, following.alerts[0]],
            keyword="ETL-Alarm",
            at_mobiles=MOBILES,
            fits=fits_for(robot),
        )
        assert len(more) == 2
    print(
        f"\n1000 alerts → {len(digests)} digests of {[len(d.alerts) for d in digests]} alerts, {sizes} bytes"
    )


def test_every_alert_is_named_in_exactly_one_digest_in_order():
    robot = robot_for()
    alerts = realistic_alerts(1000)

    digests = render_digests(alerts, fits=fits_for(robot))

    assert flatten(digests) == alerts
    for digest in digests:
        for alert in digest.alerts:
            assert entry_line(alert) in digest.message.text
            assert f"[log]({short_log_url(alert.log_url)})" in digest.message.text
        assert "Traceback" not in digest.message.text and "orders table is empty" not in digest.message.text


def test_heading_title_counts_and_groups_describe_the_digest():
    robot = robot_for()
    alerts = realistic_alerts(1000)

    digests = render_digests(alerts, fits=fits_for(robot))

    for digest in digests:
        n = len(digest.alerts)
        heading = blocks(digest)[0]
        assert heading == f"#### 🔴 {n} Airflow task failures"
        assert digest.message.title == f"Airflow: {n} task failures"
        assert parsed_counts(digest) == Counter(alert.dag_id for alert in digest.alerts)
        assert sum(parsed_counts(digest).values()) == n
        groups = list(dict.fromkeys((alert.dag_id, alert.run_id) for alert in digest.alerts))
        group_lines = [line for line in blocks(digest) if " · run " in line and not line.startswith("- ")]
        assert group_lines == [f"**{dag}** · run {run}" for dag, run in groups]


def test_retries_only_are_told_apart():
    alerts = [make_alert(kind=AlertKind.RETRY, try_number=1, task_id=f"t{i}") for i in range(3)]

    (digest,) = render_digests(alerts, fits=lambda m: True)

    assert blocks(digest)[0] == "#### 🟠 3 failed Airflow tries, will retry"
    assert "- t0 · try 1 of 3 · will retry · ValueError · on worker-7 · [log](" in digest.message.text


def test_single_alert_digest_is_singular():
    (digest,) = render_digests([make_alert(map_index=4)], fits=lambda m: True)

    assert digest.message.title == "Airflow: 1 task failure"
    assert blocks(digest)[0] == "#### 🔴 1 Airflow task failure"
    entry = "- load_orders [map index 4] · try 3 of 3 · failed · ValueError · on worker-7 · [log]("
    assert entry in digest.message.text


def test_keyword_is_in_title_and_heading_once():
    digests = render_digests(
        realistic_alerts(300), keyword="ETL-Alarm", fits=fits_for(robot_for("ETL-Alarm"))
    )

    for digest in digests:
        assert digest.message.title.startswith("[ETL-Alarm] Airflow: ")
        assert blocks(digest)[0].endswith(" · ETL-Alarm")
        assert digest.message.text.count("ETL-Alarm") == 1
    (digest,) = render_digests([make_alert()], keyword="Airflow", fits=lambda m: True)
    assert digest.message.title.count("Airflow") == 1 and blocks(digest)[0].count("Airflow") == 1


def test_mentions_are_written_into_every_digest():
    robot = robot_for(at_mobiles=MOBILES)

    digests = render_digests(realistic_alerts(300), at_mobiles=MOBILES, fits=fits_for(robot))

    assert len(digests) > 1
    for digest in digests:
        assert blocks(digest)[-1] == "@13800000000 @13900000000"
        assert b'"atMobiles":["13800000000","13900000000"]' in body(robot, digest)


def test_cjk_ids_are_counted_in_bytes():
    robot = robot_for(keyword="告警")
    alerts = [
        make_alert(
            dag_id="订单日报",
            task_id=f"加载订单数据到仓库的分区任务{i}",
            run_id="手动运行_二〇二六",
            log_url=None,
            exception_type="数据校验错误",
        )
        for i in range(800)
    ]

    digests = render_digests(alerts, keyword="告警", fits=fits_for(robot))

    assert flatten(digests) == alerts
    sizes = [len(body(robot, digest)) for digest in digests]
    assert all(size <= MAX_BODY_BYTES for size in sizes)
    assert min(sizes[:-1]) > MAX_BODY_BYTES - 200, "bytes, not characters: the budget is used"
    # Counted in characters, the digests would look far from full.
    assert all(len(digest.message.text) < 0.6 * MAX_BODY_BYTES for digest in digests)


@pytest.mark.parametrize("char", ["a", "数"])
def test_airflow_max_length_ids_fit_whole(char):
    robot = robot_for(keyword="ETL-Alarm", at_mobiles=MOBILES)
    long_id = char * 250
    alerts = [
        make_alert(
            dag_id=long_id, task_id=long_id + str(i), run_id=long_id, log_url=log_url(long_id, long_id)
        )
        for i in range(40)
    ]

    digests = render_digests(alerts, keyword="ETL-Alarm", at_mobiles=MOBILES, fits=fits_for(robot))

    assert flatten(digests) == alerts
    for digest in digests:
        assert len(body(robot, digest)) <= MAX_BODY_BYTES
        assert CUT not in digest.message.text
        for alert in digest.alerts:
            assert entry_line(alert) in digest.message.text


def test_max_messages_returns_the_first_digests_only():
    robot = robot_for()
    alerts = realistic_alerts(1000)
    everything = render_digests(alerts, fits=fits_for(robot))

    first_two = render_digests(alerts, fits=fits_for(robot), max_messages=2)

    assert first_two == everything[:2]
    assert flatten(first_two) == alerts[: len(flatten(first_two))]
    assert render_digests(alerts, fits=fits_for(robot), max_messages=0) == []
    assert render_digests(alerts, fits=fits_for(robot), max_messages=1000) == everything
    with pytest.raises(ValueError):
        render_digests(alerts, fits=fits_for(robot), max_messages=-1)


def test_no_alerts_no_digests():
    assert render_digests([], fits=lambda m: True) == []


def test_alert_too_large_alone_is_shortened_but_still_reported():
    robot = robot_for(at_mobiles=MOBILES)
    limit = 900
    huge = make_alert(
        dag_id="数" * 250, task_id="任" * 250, run_id="运" * 250, log_url="http://x/" + "a" * 2000
    )
    alerts = [make_alert(task_id="before"), huge, make_alert(task_id="after")]

    digests = render_digests(alerts, at_mobiles=MOBILES, fits=fits_for(robot, limit))

    assert flatten(digests) == alerts
    assert [digest.alerts for digest in digests] == [(alerts[0],), (huge,), (alerts[2],)]
    shortened = digests[1]
    assert all(len(body(robot, digest)) <= limit for digest in digests)
    assert len(body(robot, shortened)) > limit - 50, "cut as little as needed"
    assert CUT in shortened.message.text
    assert "**数数数" in shortened.message.text and "- 任任任" in shortened.message.text
    assert "try 3 of 3 · failed" in shortened.message.text
    assert shortened.message.text.endswith("@13800000000 @13900000000")
    shortened.message.text.encode("utf-8")  # no half characters


def test_no_room_even_for_a_cut_alert_is_an_error():
    robot = robot_for(keyword="K" * 500)

    with pytest.raises(ValueError, match="no digest fits"):
        render_digests([make_alert()], keyword="K" * 500, fits=fits_for(robot, 600))


def test_fits_that_checks_more_than_size_trims_the_digest():
    def at_most_seven_entries(message: RenderedMessage) -> bool:
        return sum(line.startswith("- ") for line in message.text.split("\n")) <= 7

    alerts = realistic_alerts(100)

    digests = render_digests(alerts, fits=at_most_seven_entries)

    assert flatten(digests) == alerts
    assert [len(digest.alerts) for digest in digests] == [7] * 14 + [2]


def test_msg_uuid_is_deterministic_per_set_of_alerts():
    alerts = realistic_alerts(5)
    first = Digest(RenderedMessage("t", "x"), tuple(alerts))
    again = Digest(RenderedMessage("other", "y"), tuple(reversed(alerts)))

    assert re.fullmatch(r"[0-9a-f]{32}", digest_msg_uuid(first))
    assert digest_msg_uuid(first) == digest_msg_uuid(again)
    assert digest_msg_uuid(first) != digest_msg_uuid(Digest(first.message, tuple(alerts[:4])))


ids = st.text(
    st.one_of(
        st.sampled_from(
            list("*_[]()#>`|-~\\\"'\n\t ") + ["数", "据", "🔥", "👩", "\u200d", "\u2028", "\x00"]
        ),
        st.characters(blacklist_categories=("Cs",)),
    ),
    max_size=60,
)


@st.composite
def random_alerts(draw) -> Alert:
    return Alert(
        kind=draw(st.sampled_from(AlertKind)),
        dag_id=draw(st.sampled_from(["dag_a", "表"]) | ids),
        task_id=draw(ids | st.text(st.sampled_from('数🔥\\"*_'), min_size=200, max_size=400)),
        run_id=draw(st.sampled_from(["manual__1", "运行"]) | ids),
        try_number=draw(st.integers(1, 100)),
        max_tries=draw(st.integers(0, 100)),
        map_index=draw(st.integers(-1, 5000)),
        log_url=draw(st.none() | ids.map(lambda s: "http://h/log?x=" + s)),
        exception_type=draw(st.none() | ids),
        exception_message=draw(ids),
        traceback=draw(st.none() | ids),
    )


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    alerts=st.lists(random_alerts(), max_size=40),
    limit=st.integers(1_200, 3_000) | st.integers(3_000, MAX_BODY_BYTES),
    keyword=st.none() | st.sampled_from(["Airflow", "告警", 'k"\\y']),
    at_mobiles=st.sampled_from([(), MOBILES]),
)
def test_random_alerts_always_fit_and_are_each_reported_once(alerts, limit, keyword, at_mobiles):
    robot = robot_for(keyword=keyword, at_mobiles=at_mobiles)

    digests = render_digests(alerts, keyword=keyword, at_mobiles=at_mobiles, fits=fits_for(robot, limit))

    assert flatten(digests) == alerts
    for digest in digests:
        assert len(body(robot, digest)) <= limit
        if len(digest.alerts) > 1:  # only a lone alert may be shortened
            for alert in digest.alerts:
                assert entry_line(alert) in digest.message.text
        if keyword:
            assert keyword in digest.message.text


def test_5000_alerts_render_quickly():
    robot = robot_for(keyword="ETL-Alarm", at_mobiles=MOBILES)
    alerts = realistic_alerts(5000)

    started = time.perf_counter()
    digests = render_digests(alerts, keyword="ETL-Alarm", at_mobiles=MOBILES, fits=fits_for(robot))
    elapsed = time.perf_counter() - started

    assert flatten(digests) == alerts
    print(f"\n5000 alerts → {len(digests)} digests in {elapsed * 1000:.0f} ms")
    assert elapsed < 2.0


def test_log_links_drop_only_base_date():
    url = (
        "http://localhost:8080/dags/d/grid?dag_run_id=r%3A1&task_id=t&map_index=3"
        "&base_date=2026-11-20T00%3A00%3A00%2B0000&tab=logs"
    )

    assert (
        short_log_url(url)
        == "http://localhost:8080/dags/d/grid?dag_run_id=r%3A1&task_id=t&map_index=3&tab=logs"
    )
