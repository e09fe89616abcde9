"""Spool-folder ingestion (SPEC 8.2): ``records`` reads and validates files,
``ingest`` applies them to ``contacts`` exactly once."""
