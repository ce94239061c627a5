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
# gpu: one slot per GPU worker (training tasks: queue "gpu", pool "gpu").
airflow pools set gpu "${AIRFLOW_GPU_POOL_SLOTS:-1}" "GPU training runs: one per GPU worker"
# datagen: mapped data-generation shards running at once across all CPU workers.
airflow pools set datagen "${AIRFLOW_DATAGEN_POOL_SLOTS:-8}" "data generation shards (dynamic task mapping)"
# torchserve: one deployment at a time (register, smoke test, switch default, unregister the old version).
airflow pools set torchserve 1 "TorchServe deployments, one at a time"

airflow version
