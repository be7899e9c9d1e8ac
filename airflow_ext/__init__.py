"""airflow-dingbot: DingTalk alerts for Apache Airflow task failures, delivered the way email alerts are."""

__version__ = "0.1.0"
