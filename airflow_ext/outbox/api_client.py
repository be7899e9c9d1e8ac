"""Posting one alert to the outbox on the api-server (:mod:`airflow_ext.outbox.api`), as a worker.

The URL is found from the Execution API's own (``[core] execution_api_server_url``, which every
worker already has): the outbox route sits beside ``/execution`` on the same api-server. Each
attempt is bounded by the alert's deadline and retried within it like a robot post; what the
api-server answers decides whether another attempt can help.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit, urlunsplit

import requests

from airflow_ext.alert import Alert
from airflow_ext.delivery import RetryPolicy, deliver
from airflow_ext.errors import ConfigError, DeliveryError
from airflow_ext.outbox.api import ALERTS_ROUTE, TRY_SETTINGS_ROUTE, URL_PREFIX

#: Answers after which the same request can succeed: the api-server restarting or overloaded.
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})


def outbox_url(execution_api_url: str) -> str:
    """``http://host:8080/execution/`` -> ``http://host:8080/dingbot/outbox/alerts`` (sub-paths kept)."""
    return _door_url(execution_api_url, ALERTS_ROUTE)


def try_settings_url(execution_api_url: str) -> str:
    """``http://host:8080/execution/`` -> ``http://host:8080/dingbot/outbox/try-settings``."""
    return _door_url(execution_api_url, TRY_SETTINGS_ROUTE)


def _door_url(execution_api_url: str, route: str) -> str:
    parts = urlsplit(execution_api_url)
    path = parts.path.rstrip("/")
    if parts.scheme not in ("http", "https") or not parts.netloc or not path.endswith("/execution"):
        raise ConfigError(
            "[core] execution_api_server_url must be the api-server's Execution API "
            f"(http(s)://host:port[/prefix]/execution/) for the outbox; it is {execution_api_url!r}"
        )
    root = path[: -len("/execution")]
    return urlunsplit((parts.scheme, parts.netloc, f"{root}{URL_PREFIX}{route}", "", ""))


def post_alert(
    alert: Alert, url: str, token: str, policy: RetryPolicy, *, deadline_at: float | None = None
) -> bool:
    """Queue ``alert`` through the api-server; True if queued, False if this try was queued before."""
    body = json.dumps({"alert": alert.to_dict()}, ensure_ascii=False).encode("utf-8")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def attempt(timeouts) -> bool:
        response = _request("POST", url, timeouts, data=body, headers=headers)
        if response.status_code in (200, 201):
            try:
                return bool(response.json()["queued"])
            except (ValueError, KeyError, TypeError):
                raise DeliveryError(
                    f"the api-server's outbox at {url} answered HTTP {response.status_code} without a result",
                    retryable=False,
                    http_status=response.status_code,
                ) from None
        raise refusal(url, response)

    return deliver(attempt, policy, deadline_at=deadline_at)


def fetch_try_settings(
    url: str, token: str, policy: RetryPolicy, *, deadline_at: float | None = None
) -> dict:
    """The ding flags and routing facts of the try ``token`` belongs to, as the metadata database
    has them (``airflow_ext.handoff.Handoff`` fields); raises DeliveryError."""
    headers = {"Authorization": f"Bearer {token}"}

    def attempt(timeouts) -> dict:
        response = _request("GET", url, timeouts, headers=headers)
        if response.status_code == 200:
            try:
                settings = response.json()["settings"]
                if isinstance(settings, dict):
                    return settings
            except (ValueError, KeyError, TypeError):
                pass
            raise DeliveryError(
                f"the api-server at {url} answered HTTP 200 without the try's settings", retryable=False
            )
        raise refusal(url, response, "the request for the try's settings")

    return deliver(attempt, policy, deadline_at=deadline_at)


def _request(method: str, url: str, timeouts, **kwargs) -> requests.Response:
    """One attempt at the api-server's door, bounded by the attempt's timeouts; no answer is retryable."""
    try:
        return requests.request(
            method, url, timeout=(timeouts.connect_s, timeouts.read_s), allow_redirects=False, **kwargs
        )
    except requests.RequestException as err:
        raise DeliveryError(
            f"the api-server's outbox at {url} did not answer ({type(err).__name__})", retryable=True
        ) from None


def refusal(url: str, response: requests.Response, what: str = "the alert") -> DeliveryError:
    status = response.status_code
    try:
        why = str(response.json().get("detail"))[:300]
    except (ValueError, AttributeError):
        why = response.text[:300]
    if status == 404 and why == "Not Found":  # the api-server's own answer for a route it lacks
        why = "no such route: is airflow-dingbot installed where the api-server runs?"
    return DeliveryError(
        f"the api-server's outbox at {url} refused {what}: HTTP {status}: {why}",
        retryable=status >= 500 or status in RETRYABLE_STATUSES,
        http_status=status,
    )
