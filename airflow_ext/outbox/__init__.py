"""The durable outbox: alerts kept in the metadata database until `airflow-ext deliver` sends them."""
