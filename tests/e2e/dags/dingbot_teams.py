"""Three teams on one Airflow, each with its own group (tests/e2e/test_routing_e2e.py):

* teampay: tagged team-payments, a route sends it to the payments DingTalk robot;
* mltrain: a route matches its DAG id (ml*) and sends it to the ML team's WeCom robot;
* teamops: per task: by owner (a route), by default_conn_id (the platform's Feishu robot), the
  task's own ding_conn_id, and a task fanned out to two robots.

Task ids are plain words: every channel shows them as written, so the tests find them in any body.
"""

from airflow import DAG
from airflow.operators.python import PythonOperator
from dingbot_e2e_common import START, fail

ALERT_ON_FAILURE = {"retries": 0, "ding_on_failure": True}

with DAG("teampay", schedule=None, start_date=START, tags=["team-payments"], default_args=ALERT_ON_FAILURE):
    PythonOperator(task_id="payorders", python_callable=fail)

with DAG("mltrain", schedule=None, start_date=START, default_args=ALERT_ON_FAILURE):
    PythonOperator(task_id="mlfit", python_callable=fail)

with DAG("teamops", schedule=None, start_date=START, tags=["ops"], default_args=ALERT_ON_FAILURE):
    PythonOperator(task_id="opssweep", python_callable=fail, owner="alice")
    PythonOperator(task_id="opsvacuum", python_callable=fail)
    PythonOperator(task_id="opsrotate", python_callable=fail, ding_conn_id="payments_dingtalk")
    PythonOperator(task_id="opsfanout", python_callable=fail, ding_conn_id=["ml_wecom", "platform_feishu"])

# No ding flag anywhere: it alerts only where [dingbot] default_ding_on_failure is on.
with DAG("teamquiet", schedule=None, start_date=START, default_args={"retries": 0}):
    PythonOperator(task_id="quietfail", python_callable=fail)
