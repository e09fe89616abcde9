"""Event sources: each module maps its events to the contacts they affect (SPEC 8)."""
