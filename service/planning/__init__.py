"""The pure planning core: what to send when. No I/O, no clock (SPEC 5, 6)."""
