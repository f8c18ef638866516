"""HTTP in and out: campaigns, enrollment, events, webhooks, tracking and stats."""
