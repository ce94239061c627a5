"""The production topology of docker-compose.yml run as local processes (`make run-distributed`):

settings   infra/airflow/airflow.env, the Airflow settings, queues and pools compose reads too
services   PostgreSQL and Redis as private instances, the platform's secrets
platform   DistributedPlatform: the data stores, S3, MLflow, Airflow on Celery, TorchServe; the demo
"""
