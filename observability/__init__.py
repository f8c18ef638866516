"""What the processes tell operators: Prometheus metrics (metrics.py), JSON log lines (logs.py)
and the outcome of every send (sends.py)."""
