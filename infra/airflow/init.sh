#!/usr/bin/env bash
# airflow-init (docker-compose one-shot): migrate the metadata database (Airflow's tables and the FAB auth
# manager's), create the admin user, create the pools the DAGs use. Every step is idempotent: running it again
# on an existing database changes nothing but pool sizes.
set -euo pipefail
: "${AIRFLOW_ADMIN_USERNAME:?set AIRFLOW_ADMIN_USERNAME in .env}"
: "${AIRFLOW_ADMIN_PASSWORD:?set AIRFLOW_ADMIN_PASSWORD in .env}"

echo "airflow-init: migrating the metadata database"
airflow db migrate

echo "airflow-init: admin user ${AIRFLOW_ADMIN_USERNAME}"
# FAB's `users create` leaves an existing user as it is.
airflow users create --role Admin \
  --username "${AIRFLOW_ADMIN_USERNAME}" --password "${AIRFLOW_ADMIN_PASSWORD}" \
  --email "${AIRFLOW_ADMIN_EMAIL:-admin@example.org}" --firstname Admin --lastname khmer-ocr

echo "airflow-init: pools"
# Slots from infra/airflow/airflow.env (the services' env_file; `make run-distributed` reads the same file).
# gpu: one slot per GPU worker (training tasks: queue "gpu", pool "gpu").
airflow pools set gpu "${KHMER_OCR_POOL_GPU:?from infra/airflow/airflow.env}" "training runs: one per GPU worker"
# datagen: mapped data-generation shards running at once across all CPU workers.
airflow pools set datagen "${KHMER_OCR_POOL_DATAGEN:?from infra/airflow/airflow.env}" "data generation shards running at once"
# torchserve: one deployment at a time (register, smoke test, switch default, unregister the old version).
airflow pools set torchserve "${KHMER_OCR_POOL_TORCHSERVE:?from infra/airflow/airflow.env}" "TorchServe deployments, one at a time"

airflow version
