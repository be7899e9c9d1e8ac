"""The Alerts page on Airflow 3.x: a FastAPI app the api-server mounts, shown in the UI's navigation.

The user is Airflow's: the same JWT as the UI's (its ``_token`` cookie, or a Bearer header),
resolved by the api-server's own code, and every decision is the auth manager's, as on Airflow's
own routes: reading needs the right to read DAGs (the alerts shown are those of the DAGs the user
may read), acting the right to edit Connections, which the robots are (Op and Admin). An anonymous
visitor is sent to the login page.

Airflow 3 has no CSRF tokens: its cookie is ``SameSite=Lax``. So the actions take JSON only (a form
post from another site cannot send that without a CORS preflight) and check the request's
``Origin`` (and ``Sec-Fetch-Site``) against the api-server's own.

Kept without ``from __future__ import annotations``: FastAPI reads the endpoints' annotations.
"""

import functools
import json
import logging
from typing import Any, Callable, Optional
from urllib.parse import quote, urlsplit

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from airflow_ext.outbox.store import OutboxEntry
from airflow_ext.ui import page as alerts_page

log = logging.getLogger(__name__)

#: Where the api-server mounts the page (beside the outbox door at /dingbot).
URL_PREFIX = "/dingbot-alerts"
#: The UI's route to it: ``/plugin/<URL_ROUTE>`` shows the page in an iframe.
URL_ROUTE = "dingbot-alerts"
#: An action's JSON body is a few short fields.
MAX_ACTION_BYTES = 4096


def base_path() -> str:
    """The path ``[api] base_url`` puts the api-server under ('' at the root)."""
    from airflow.configuration import conf

    base_url = conf.get("api", "base_url", fallback="") or ""
    return urlsplit(base_url).path.rstrip("/")


def external_views() -> list[dict]:
    return [
        {
            "name": "Alerts",
            "href": f"{base_path()}{URL_PREFIX}/",
            "url_route": URL_ROUTE,
            "destination": "nav",
            "category": "browse",
            "icon": None,
        }
    ]


@functools.cache
def _templates():
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    return Environment(loader=FileSystemLoader(alerts_page.TEMPLATES), autoescape=select_autoescape(["html"]))


def _links() -> alerts_page.Links:
    root = base_path()

    def task_instance(entry: OutboxEntry) -> str:
        alert = entry.alert
        mapped = f"/mapped/{alert.map_index}" if alert.map_index >= 0 else ""
        return (
            f"{root}/dags/{quote(alert.dag_id, safe='')}/runs/{quote(alert.run_id, safe='')}"
            f"/tasks/{quote(alert.task_id, safe='')}{mapped}"
        )

    return alerts_page.Links(
        task_instance=task_instance,
        log=lambda entry: f"{task_instance(entry)}?try_number={entry.alert.try_number}",
    )


def _auth_manager():
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager()


async def current_user(request: Request) -> Optional[Any]:
    """The logged-in user of this request, or None: Bearer header first, then the UI's cookie."""
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
    from airflow.api_fastapi.core_api.security import resolve_user_from_token

    authorization = request.headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    token = credentials.strip() if scheme.lower() == "bearer" else request.cookies.get(COOKIE_NAME_JWT_TOKEN)
    if not token:
        return None
    try:
        return await resolve_user_from_token(token)
    except HTTPException:  # expired or invalid: as good as no login
        return None


def may_read(user: Any) -> bool:
    """Whether the user may read some DAG (the page lists the alerts of those only): all DAGs, or
    some of them, as a per-DAG permission gives; asked with no DAG, the auth manager answers for all."""
    manager = _auth_manager()
    return manager.is_authorized_dag(method="GET", user=user) or bool(
        manager.get_authorized_dag_ids(user=user, method="GET")
    )


def may_act(user: Any) -> bool:
    return _auth_manager().is_authorized_connection(method="PUT", user=user)


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def check_same_origin(request: Request) -> None:
    """Refuse (403) a request a browser sent from another site; one without Origin too: every
    browser sends it with a POST from a script."""
    from airflow.configuration import conf

    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        raise HTTPException(403, f"cross-site request refused (Sec-Fetch-Site: {fetch_site[:40]})")
    origin = request.headers.get("origin")
    if not origin:
        raise HTTPException(403, "request refused: no Origin header")
    allowed = {_origin_of(str(request.base_url))}
    configured = conf.get("api", "base_url", fallback="") or ""
    if configured.startswith(("http://", "https://")):
        allowed.add(_origin_of(configured))
    if origin.lower().rstrip("/") not in allowed:
        raise HTTPException(403, f"request from another origin refused ({origin[:100]})")


async def _json_body(request: Request) -> dict:
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/json":
        raise HTTPException(415, "actions take a JSON body (Content-Type: application/json)")
    raw = await request.body()
    if len(raw) > MAX_ACTION_BYTES:
        raise HTTPException(413, f"an action's body is at most {MAX_ACTION_BYTES} bytes")
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, RecursionError):  # RecursionError: nested too deep for the parser
        raise HTTPException(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "the body must be a JSON object")
    return body


def create_app() -> FastAPI:
    app = FastAPI(
        title="airflow-dingbot alerts",
        description="The Alerts page: robots, recent alerts, routing; retry and test (airflow-dingbot).",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.get("/", response_class=HTMLResponse)
    async def alerts(request: Request):
        user = await current_user(request)
        if user is None:
            return RedirectResponse(_auth_manager().get_url_login(next_url=str(request.url)), status_code=302)
        if not await run_in_threadpool(may_read, user):
            return HTMLResponse("<p>You may not read DAGs, so you may not see their alerts.</p>", 403)
        can_act = await run_in_threadpool(may_act, user)
        params = request.query_params

        def build() -> str:
            from airflow_ext.dingbot import outbox_store
            from airflow_ext.outbox.store import now_ms

            readable = sorted(_auth_manager().get_authorized_dag_ids(user=user, method="GET"))
            data = alerts_page.build_page(
                outbox_store(),
                _links(),
                at_ms=now_ms(),
                dag_id=params.get("dag_id"),
                outcome=params.get("outcome"),
                readable_dag_ids=readable,
                route_dag_id=params.get("route_dag"),
                route_task_id=params.get("route_task"),
                can_act=can_act,
            )
            prefix = f"{base_path()}{URL_PREFIX}"
            return (
                _templates()
                .get_template("dingbot/alerts_standalone.html")
                .render(
                    page=data,
                    fmt=alerts_page,
                    urls={"page": f"{prefix}/", "retry": f"{prefix}/retry", "test": f"{prefix}/test"},
                    message_css=alerts_page.page_css(),
                    form_token=None,
                )
            )

        return HTMLResponse(await run_in_threadpool(build))

    async def act(request: Request, action: Callable[[Any, dict], str]) -> JSONResponse:
        try:
            check_same_origin(request)
            user = await current_user(request)
            if user is None:
                raise HTTPException(401, "not logged in")
            if not await run_in_threadpool(may_act, user):
                raise HTTPException(403, "only users who may edit Connections (Op, Admin) can do this")
            body = await _json_body(request)

            def run() -> str:
                from airflow_ext.dingbot import outbox_store

                return action(outbox_store(), body)

            message = await run_in_threadpool(run)
        except HTTPException as refused:
            log.warning("Alerts page action refused (HTTP %d): %s", refused.status_code, refused.detail)
            return JSONResponse({"detail": refused.detail}, status_code=refused.status_code)
        except alerts_page.ActionRefused as err:
            return JSONResponse({"detail": str(err)}, status_code=409)
        except Exception:  # the server log has the traceback; the answer never does
            log.exception("Alerts page action failed")
            return JSONResponse({"detail": alerts_page.ACTION_FAILED}, status_code=500)
        return JSONResponse({"message": message})

    @app.post("/retry")
    async def retry(request: Request) -> JSONResponse:
        return await act(
            request,
            lambda store, body: alerts_page.retry_dead(
                store, str(body.get("robot_key", "")), body.get("alert_id")
            ),
        )

    @app.post("/test")
    async def send_test(request: Request) -> JSONResponse:
        return await act(
            request, lambda store, body: alerts_page.send_test(store, str(body.get("robot", "")))
        )

    return app


def fastapi_apps() -> list[dict]:
    return [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "airflow-dingbot alerts"}]
