"""Posting to the api-server's outbox: where it is, what its answers mean, bounded by the deadline."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from airflow_ext.alert import Alert, AlertKind
from airflow_ext.delivery import RetryPolicy
from airflow_ext.errors import ConfigError, DeliveryError
from airflow_ext.outbox.api_client import fetch_try_settings, outbox_url, post_alert, try_settings_url

TOKEN = "eyJhbGciOiJIUzUxMiJ9.eyJzdWIiOiJ0aSJ9.c2lnbmF0dXJlLXRoYXQtaXMtc2VjcmV0"
ALERT = Alert(kind=AlertKind.FAILURE, dag_id="d", task_id="t", run_id="r", try_number=1, max_tries=0)


@pytest.mark.parametrize(
    "execution_api, expected",
    [
        ("http://localhost:8080/execution/", "http://localhost:8080/dingbot/outbox/alerts"),
        ("http://localhost:8080/execution", "http://localhost:8080/dingbot/outbox/alerts"),
        (
            "https://airflow.example.com/team-a/execution/",
            "https://airflow.example.com/team-a/dingbot/outbox/alerts",
        ),
    ],
)
def test_the_outbox_is_beside_the_execution_api(execution_api, expected):
    assert outbox_url(execution_api) == expected


@pytest.mark.parametrize(
    "execution_api", ["", "localhost:8080/execution/", "http://host/api/", "ftp://h/execution"]
)
def test_an_execution_api_url_elsewhere_is_named_in_the_error(execution_api):
    with pytest.raises(ConfigError, match=r"\[core\] execution_api_server_url"):
        outbox_url(execution_api)


class Server:
    """A local stand-in for the api-server: answers each request with the next planned (status, body)."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.seen = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers["Content-Length"])
                server.seen.append((self.headers["Authorization"], json.loads(self.rfile.read(length))))
                self._answer()

            def do_GET(self):
                server.seen.append((self.headers["Authorization"], self.path))
                self._answer()

            def _answer(self):
                status, answer = server.answers.pop(0) if len(server.answers) > 1 else server.answers[0]
                if status == "hang":
                    time.sleep(5)
                    return
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/dingbot/outbox/alerts"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(request):
    made = []

    def make(*answers):
        made.append(Server(answers))
        return made[-1]

    yield make
    for s in made:
        s.close()


POLICY = RetryPolicy(
    max_attempts=3, deadline_s=2.0, connect_timeout_s=0.5, read_timeout_s=0.5, backoff_initial_s=0.01
)


def test_an_alert_is_posted_with_the_tries_token(server):
    api = server((201, {"queued": True, "duplicate": False}))
    assert post_alert(ALERT, api.url, TOKEN, POLICY) is True
    ((authorization, sent),) = api.seen
    assert authorization == f"Bearer {TOKEN}"
    assert sent == {"alert": ALERT.to_dict()}


def test_a_repeat_is_not_queued_again(server):
    assert post_alert(ALERT, server((200, {"queued": False, "duplicate": True})).url, TOKEN, POLICY) is False


@pytest.mark.parametrize(
    "status, retryable, words",
    [
        (401, False, "HTTP 401: no token"),
        (403, False, "HTTP 403: no token"),
        (404, False, "HTTP 404: no token"),
        (409, False, "HTTP 409: no token"),
        (413, False, "HTTP 413"),
        (422, False, "HTTP 422"),
        (429, True, "HTTP 429"),
        (500, True, "HTTP 500"),
        (503, True, "HTTP 503"),
    ],
)
def test_the_answer_decides_whether_to_try_again(server, status, retryable, words):
    api = server((status, {"detail": "no token"}))
    with pytest.raises(DeliveryError) as error:
        post_alert(ALERT, api.url, TOKEN, POLICY)
    assert error.value.retryable is retryable and error.value.http_status == status
    assert words in str(error.value) and TOKEN not in str(error.value)
    assert len(api.seen) == (POLICY.max_attempts if retryable else 1)


def test_a_missing_route_says_where_to_install_the_package(server):
    with pytest.raises(DeliveryError, match="is airflow-dingbot installed where the api-server runs"):
        post_alert(ALERT, server((404, {"detail": "Not Found"})).url, TOKEN, POLICY)


def test_a_passing_outage_is_retried_within_the_deadline(server):
    api = server((503, {"detail": "restarting"}), (201, {"queued": True}))
    assert post_alert(ALERT, api.url, TOKEN, POLICY) is True
    assert len(api.seen) == 2


def test_an_api_server_that_never_answers_costs_at_most_the_deadline(server):
    api = server(("hang", None))
    started = time.monotonic()
    with pytest.raises(DeliveryError) as error:
        post_alert(ALERT, api.url, TOKEN, POLICY)
    assert time.monotonic() - started < POLICY.deadline_s + 0.5
    assert error.value.retryable and "did not answer (ReadTimeout)" in str(error.value)
    assert TOKEN not in str(error.value)


def test_no_api_server_at_all_is_retryable_and_named():
    with pytest.raises(DeliveryError) as error:
        post_alert(ALERT, "http://127.0.0.1:9/dingbot/outbox/alerts", TOKEN, POLICY)
    assert error.value.retryable and "http://127.0.0.1:9/dingbot/outbox/alerts did not answer" in str(
        error.value
    )


def test_the_try_settings_are_beside_the_execution_api():
    assert try_settings_url("https://h/team-a/execution/") == "https://h/team-a/dingbot/outbox/try-settings"


def test_the_try_settings_are_read_with_the_tries_token(server):
    api = server((200, {"settings": {"ding_on_failure": True, "conn_ids": ["team"]}}))
    assert fetch_try_settings(api.url, TOKEN, POLICY) == {"ding_on_failure": True, "conn_ids": ["team"]}
    assert api.seen == [(f"Bearer {TOKEN}", "/dingbot/outbox/alerts")]


@pytest.mark.parametrize(
    "answer, words",
    [
        ((403, {"detail": "invalid task token"}), "HTTP 403: invalid task token"),
        ((200, {"queued": True}), "without the try's settings"),
    ],
)
def test_try_settings_not_given_are_an_error_naming_why(server, answer, words):
    api = server(answer)
    with pytest.raises(DeliveryError, match=words) as raised:
        fetch_try_settings(api.url, TOKEN, POLICY)
    assert TOKEN not in str(raised.value)
