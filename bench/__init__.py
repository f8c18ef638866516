"""`make bench`: drip's throughput and latency beside raw Temporal, on one dev server."""
