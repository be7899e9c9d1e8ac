"""The alerts the outbox benchmarks record and post: alert ``n`` is the same in every process.

Task ``load_partition_NNNN`` of one of 40 DAGs (a domain per ``n % 5``, a region per producer),
with the log URL Airflow builds, a realistic exception and an 11-line traceback. On Airflow 3 an
alert is for a genuine failed try and goes with that try's Execution API token.
"""

from __future__ import annotations

import time
from urllib.parse import quote

DOMAINS = ("orders_etl", "billing_sync", "clickstream_ingest", "inventory_snapshot", "ml_features")
REGIONS = (
    "cn_hangzhou",
    "cn_shanghai",
    "cn_beijing",
    "cn_shenzhen",
    "ap_singapore",
    "eu_frankfurt",
    "us_virginia",
    "cn_chengdu",
)
RUN_ID = "scheduled__2026-11-21T02:00:00+00:00"
LOGICAL_DATE = "2026-11-21T02:00:00+00:00"
BASE_URL = "https://airflow.data-platform.example.com"
TASK_PREFIX = "load_partition_"

TRACEBACK = """\
Traceback (most recent call last):
  File "/opt/airflow/dags/{domain}/tasks.py", line 118, in load_partition
    rows = extract(conn, partition={n})
  File "/opt/airflow/dags/{domain}/extract.py", line 57, in extract
    with warehouse.connect(timeout=30) as conn:
  File "/opt/airflow/dags/common/warehouse.py", line 41, in connect
    return psycopg2.connect(dsn, connect_timeout=timeout)
  File "/home/airflow/.local/lib/python3.11/site-packages/psycopg2/__init__.py", line 122, in connect
    conn = _connect(dsn, connection_factory=connection_factory, **kwasync)
psycopg2.OperationalError: connection to server at "warehouse-db.internal" (10.0.3.17), port 5432 \
failed: FATAL:  remaining connection slots are reserved for non-replication superuser connections"""


def make_alert(n: int, producer: int):
    from airflow_ext.alert import Alert, AlertKind

    domain = DOMAINS[n % len(DOMAINS)]
    dag_id = f"{domain}_{REGIONS[producer % len(REGIONS)]}"
    task_id = f"{TASK_PREFIX}{n:04d}"
    try_number = 1 + n % 3
    base_date = quote("2026-11-21T02:00:00.000000+0000")
    return Alert(
        kind=AlertKind.FAILURE if try_number == 3 else AlertKind.RETRY,
        dag_id=dag_id,
        task_id=task_id,
        run_id=RUN_ID,
        try_number=try_number,
        max_tries=2,
        logical_date=LOGICAL_DATE,
        hostname=f"airflow-worker-{producer}.airflow-worker.airflow.svc.cluster.local",
        # As Airflow 2.11's TaskInstance.log_url builds it.
        log_url=(
            f"{BASE_URL}/dags/{dag_id}/grid?dag_run_id={quote(RUN_ID)}&task_id={task_id}"
            f"&base_date={base_date}&tab=logs"
        ),
        exception_type="OperationalError",
        exception_message=(
            'connection to server at "warehouse-db.internal" (10.0.3.17), port 5432 failed: FATAL:  '
            "remaining connection slots are reserved for non-replication superuser connections"
        ),
        traceback=TRACEBACK.format(domain=domain, n=n),
    )


#: The Execution API's audience (what its validator requires of a task token).
TOKEN_AUDIENCE = "urn:airflow.apache.org:task"


def execution_token(ti_id: str, secret: str) -> str:
    """A running try's token as the Execution API issues it, for ``[api_auth] jwt_secret``."""
    import uuid

    import jwt

    now = int(time.time())
    claims = {"sub": ti_id, "scope": "execution", "aud": TOKEN_AUDIENCE, "iat": now, "nbf": now}
    return jwt.encode({**claims, "exp": now + 600, "jti": uuid.uuid4().hex}, secret, algorithm="HS512")


def make_alert3(n: int, ti: dict):
    """Alert ``n`` for the genuine failed try ``ti`` (``{"dag_id", "task_id", "run_id", "id"}``)."""
    from dataclasses import replace

    from airflow_ext.alert import AlertKind

    alert = make_alert(n, 0)
    dag_id, task_id, run_id = ti["dag_id"], ti["task_id"], ti["run_id"]
    return replace(
        alert,
        kind=AlertKind.FAILURE,
        dag_id=dag_id,
        task_id=task_id,
        run_id=run_id,
        try_number=1,
        max_tries=0,
        map_index=-1,
        # As Airflow 3.3's task log URL looks.
        log_url=f"{BASE_URL}/dags/{dag_id}/runs/{quote(run_id)}/tasks/{task_id}?try_number=1",
    )
