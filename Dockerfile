# Apache Airflow 2.11.2 with airflow-dingbot: DingTalk alerts on task failure and retry.
#
#   docker build -t my-airflow:2.11.2-dingbot .
#
# The image build applies the patch series to the Airflow inside the image; the build fails
# if the series does not apply cleanly (wrong Airflow version, or files changed by hand).
FROM apache/airflow:2.11.2-python3.11

COPY --chown=airflow:root . /opt/airflow-dingbot

# Pin Airflow so installing the package can never move it; then patch, then verify.
RUN pip install --no-cache-dir "apache-airflow==2.11.2" /opt/airflow-dingbot \
 && airflow-ext patch apply \
 && airflow-ext patch check

# Configure the robot at run time, never in the image:
#   AIRFLOW__DINGDING__BOT_URL_SECRET / AIRFLOW__DINGDING__BOT_URL_CMD / AIRFLOW__DINGDING__BOT_URL
#   AIRFLOW__DINGDING__SECRET_SECRET  / AIRFLOW__DINGDING__SECRET_CMD  / AIRFLOW__DINGDING__SECRET
