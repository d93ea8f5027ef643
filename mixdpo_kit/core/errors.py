"""The kit's own errors for what a user asked for: a setting, a name, a file, the data.

Each is a ``ValueError`` (and :class:`MissingFile` a ``FileNotFoundError``) so code that caught those
keeps working. The console script prints one line for a :class:`UserError` and keeps the traceback
for anything else: a bug in the kit does not read like a user's mistake.
"""
from __future__ import annotations


class UserError(ValueError):
    """A setting, a name or an input the kit cannot use; the message says what and what would do."""


class DataError(UserError):
    """Preference data that cannot be used, with what is wrong and where."""


class MissingFile(UserError, FileNotFoundError):
    """A file or folder the user named that is not there."""
