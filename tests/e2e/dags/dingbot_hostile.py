"""A task whose failure message tries to be markdown, HTML, a mention and a template."""

from airflow import DAG
from airflow.operators.python import PythonOperator
from dingbot_e2e_common import START

HOSTILE = "click [here](http://evil.example/phish) @13800000000 {{ 7*191 }} <b>bold</b>\n# Fake heading"


def raise_hostile():
    raise ValueError(HOSTILE)


with DAG("dingbot_hostile", schedule=None, start_date=START, default_args={"ding_on_failure": True}):
    PythonOperator(task_id="hostile", python_callable=raise_hostile, retries=0)
