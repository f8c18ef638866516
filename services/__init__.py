"""The application core that api/ (HTTP) and activities/ (the worker) both stand on. Never
imports api/."""
