"""`drip`, the command line: run the system's processes, and drive a running API."""
