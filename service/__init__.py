"""mailplan: keeps ``email_schedules`` equal to a full recompute, incrementally."""

__version__ = "0.1.0"
