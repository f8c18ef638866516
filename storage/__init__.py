"""SQL storage: campaign definitions and the read-side record of what happened."""
