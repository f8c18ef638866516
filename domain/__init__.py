"""Types and constants shared by the API, the worker and the workflows (stdlib only)."""
