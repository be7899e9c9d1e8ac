"""The Alerts page in Airflow's UI and the HTML rendering of robot messages."""
