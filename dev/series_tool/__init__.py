"""dev/series: keep patch series against upstream Airflow sdists."""
