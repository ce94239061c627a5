"""khmer-ocr's Airflow glue. Airflow puts plugins/ on sys.path, so DAG files import
``khmer_ocr_airflow.<module>``:

  assets     the Assets the DAGs publish and consume (datasets, the best phase-3.1 model, the champion)
  settings   what every DAG's definition shares: @dag settings, form params, pools, queues, retry policies
  paths      where the DAGs keep what they write (the state folder, a folder per run, new datasets)
  hooks      the MLflow registry and TorchServe connections
  tasks      the library calls the tasks make (errors translated, MLflow's URI handed down), a @task factory
  operators, triggers   the deferrable model-approval wait
  callbacks  failure summaries
  workers    what tasks need from Celery workers: the hostname each reports, child processes

Parsing a DAG imports nothing of the khmer_ocr library but khmer_ocr.names (constants): the library is
imported inside the functions that call it, and the library never imports Airflow.
"""
