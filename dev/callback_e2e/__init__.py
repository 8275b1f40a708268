"""End-to-end harness for DAG run callbacks on executors: real Airflow processes, real databases."""
