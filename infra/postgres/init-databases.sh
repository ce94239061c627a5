#!/bin/bash
# PostgreSQL first-start script (mounted into /docker-entrypoint-initdb.d/): one role and one database each for
# Airflow's and MLflow's metadata. Runs only when the data volume is empty; to change a password later use
# ALTER ROLE ... PASSWORD in psql and update .env.
set -euo pipefail
: "${AIRFLOW_DB_PASSWORD:?}" "${MLFLOW_DB_PASSWORD:?}"

create_database() {
  # psql variables (:"name" quotes an identifier, :'name' a literal) keep the passwords out of the SQL text.
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
       -v role="$1" -v password="$2" -v db="$1" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password';
CREATE DATABASE :"db" OWNER :"role" ENCODING 'UTF8';
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
SQL
  echo "init-databases: database $1 with owner $1"
}

create_database airflow "$AIRFLOW_DB_PASSWORD"
create_database mlflow "$MLFLOW_DB_PASSWORD"
# MLflow's basic-auth accounts and permissions (infra/mlflow/basic_auth.ini), owned by the same role.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<'SQL'
CREATE DATABASE mlflow_auth OWNER mlflow ENCODING 'UTF8';
REVOKE ALL ON DATABASE mlflow_auth FROM PUBLIC;
SQL
echo "init-databases: database mlflow_auth with owner mlflow"
