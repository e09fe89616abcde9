"""The one exception hierarchy of mailplan (a leaf module: imports nothing).

Every message says what was wrong and what to do about it.
"""

from __future__ import annotations


class MailplanError(Exception):
    """Root of every error mailplan raises on purpose."""

    exit_code = 1


class ConfigError(MailplanError):
    """A configuration value is invalid; start-up stops with exit code 2."""

    exit_code = 2


class RulesError(ConfigError):
    """The state-rules data file is malformed."""


class UsageError(MailplanError):
    """The command line is wrong (exit code 2)."""

    exit_code = 2


class StoreError(MailplanError):
    """The database cannot be opened, migrated or written.

    Every store translates its driver's errors into this class (or
    :class:`StoreBusy`), so nothing above the store knows the driver.
    """


class StoreBusy(StoreError):
    """The database stayed locked by another writer after every retry."""


class StoreUnavailable(StoreError):
    """The database file is missing, read-only, unreadable or its disk is full.

    The daemon waits for it to come back (SPEC 13); a command exits 1.
    """


class RecordRefused(StoreError):
    """The database refused one record (a constraint); the record is rejected."""


class SchemaError(StoreError):
    """The database schema is not the one this mailplan needs: run ``mailplan
    init-db`` (exit code 2, SPEC 3)."""

    exit_code = 2


class InputError(MailplanError):
    """An upstream record (inbox file, event) is malformed; it is rejected, not lost."""
