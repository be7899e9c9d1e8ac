"""What every benchmark shares: the measured environments, long-lived worker processes, the
statistics, the report (side-by-side tables, PASS/MISS, JSON) and keeping secrets out of output.

The driver imports it with any Python 3.11 that has uv; it never needs Airflow itself.
"""
