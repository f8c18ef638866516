"""Every side effect the journeys need. Each activity is idempotent: the database decides."""
