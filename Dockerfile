# Apache Airflow with airflow-dingbot: DingTalk alerts on task failure and retry.
# One Dockerfile for both supported lines; AIRFLOW_VERSION picks the release (default 3.3.2;
# supported: 3.3.0-3.3.2 and 2.11.0-2.11.2, see the README):
#
#   docker build -t my-airflow:3.3.2-dingbot .
#   docker build --build-arg AIRFLOW_VERSION=3.3.1 -t my-airflow:3.3.1-dingbot .
#   docker build --build-arg AIRFLOW_VERSION=2.11.2 -t my-airflow:2.11.2-dingbot .
#
# The image build applies the patch series for that Airflow version to the Airflow inside the
# image; the build fails if there is no series for it or the series does not apply cleanly
# (files changed by hand).
ARG AIRFLOW_VERSION=3.3.2
FROM apache/airflow:${AIRFLOW_VERSION}-python3.11
# An ARG before FROM is not visible after it: declare it again for the RUN below.
ARG AIRFLOW_VERSION

COPY --chown=airflow:root . /opt/airflow-dingbot

# Pin Airflow so installing the package can never move it; then patch, then verify.
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" /opt/airflow-dingbot \
 && airflow-ext patch apply \
 && airflow-ext patch check

# Configure the robot at run time, never in the image:
#   AIRFLOW__DINGDING__BOT_URL_SECRET / AIRFLOW__DINGDING__BOT_URL_CMD / AIRFLOW__DINGDING__BOT_URL
#   AIRFLOW__DINGDING__SECRET_SECRET  / AIRFLOW__DINGDING__SECRET_CMD  / AIRFLOW__DINGDING__SECRET
