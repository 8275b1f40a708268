"""Benchmark of the two ways Airflow runs callbacks: the Dag Processor and the executor.

``dev/bench`` starts real Airflow stacks on PostgreSQL, fires callbacks through both paths
interleaved, and reports latency, burst, parse-loop, scheduler-loop and per-callback cost.
"""
