"""The FastAPI app of the outbox route (the contract is :mod:`airflow_ext.outbox.api`).

Kept apart, and without ``from __future__ import annotations``: FastAPI reads the endpoint's
annotations at runtime, and importing FastAPI stays out of the workers that only post to it.
"""

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from airflow_ext.outbox.api import (
    ALERTS_ROUTE,
    TRY_SETTINGS_ROUTE,
    OutboxDoor,
    Refused,
    bearer_token,
    check_same_try,
    log,
    parse_alert,
    read_bounded,
)


def create_app(door: OutboxDoor) -> FastAPI:
    """The app Airflow's api-server mounts at :data:`airflow_ext.outbox.api.URL_PREFIX`."""
    app = FastAPI(
        title="airflow-dingbot outbox",
        description="Queues the alerts of Airflow 3 task tries in the outbox (airflow-dingbot).",
        docs_url=None,
        redoc_url=None,
    )

    @app.post(ALERTS_ROUTE, status_code=201)
    async def queue_alert(request: Request) -> JSONResponse:
        """Queue the alert of the try this request's Execution API token belongs to."""
        try:
            token = bearer_token(request.headers.get("authorization"))
            ti_id = await door.task_instance_id(token)
            alert = parse_alert(await read_bounded(request))
            task_try = await run_in_threadpool(door.find_try, ti_id)
            check_same_try(alert, task_try)
            queued = await run_in_threadpool(door.queue, alert)
        except Refused as refused:
            return _refusal(refused, "an outbox alert")
        return JSONResponse({"queued": queued, "duplicate": not queued}, status_code=201 if queued else 200)

    @app.get(TRY_SETTINGS_ROUTE)
    async def try_settings(request: Request) -> JSONResponse:
        """The ding flags and routing facts of the task of this request's token's try."""
        try:
            token = bearer_token(request.headers.get("authorization"))
            ti_id = await door.task_instance_id(token)
            settings = await run_in_threadpool(door.try_settings, ti_id)
            if settings is None:
                raise Refused(404, "the token's task instance is not in the database")
        except Refused as refused:
            return _refusal(refused, "a try-settings request")
        return JSONResponse({"settings": settings})

    return app


def _refusal(refused: Refused, what: str) -> JSONResponse:
    """The answer to a refused request, logged (the reason never holds a secret)."""
    log.warning("Refused %s (HTTP %d): %s", what, refused.status, refused.detail)
    headers = {"WWW-Authenticate": "Bearer"} if refused.status == 401 else None
    return JSONResponse({"detail": refused.detail}, status_code=refused.status, headers=headers)
