"""Stage 5, the store: the MLflow schema (``schema``: every tag, param and metric name, typed run views), the
``Tracker`` that writes and reads it, the work dir's layout, the shared server and the environment preflight.
Reading the store never imports torch."""
