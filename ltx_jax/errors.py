"""The error types of ltx_jax: one base class for everything a user can cause.

`LTXError` derives from `ValueError` (so code that caught ValueError keeps working). Its
subclasses split by what the user must change:

- `UsageError`: an argument, config value or flag (the CLI exits with status 2);
- `DataError` and below: the files or sources given (the CLI exits with status 1):
  `SourceError` (a source missing, incomplete or not recognised), `ReleaseError` (weights that
  are no known release, or could be several), `CheckpointFormatError` (a file that is not what it
  claims to be: truncated, corrupt header, bad config metadata), `LoadError` (a checkpoint that
  does not fit the model: missing, unexpected or mis-shaped tensors, values out of range).

Every message is one line naming the value, file or key and what is allowed. Entry points catch
`LTXError` (and `OSError`) by type; nothing parses messages or class names.
"""

from __future__ import annotations

__all__ = ['LTXError', 'UsageError', 'DataError', 'SourceError', 'ReleaseError',
           'CheckpointFormatError', 'LoadError']


class LTXError(ValueError):
  """Base class of every user-facing ltx_jax error."""


class UsageError(LTXError):
  """An argument, config value or flag that is refused; the message says what to change."""


class DataError(LTXError):
  """Files or sources that cannot be used as given."""


class SourceError(DataError):
  """A source that is missing, incomplete or not recognised; the message says what to pass."""


class ReleaseError(DataError):
  """Weights that are no known release, or could be several."""


class CheckpointFormatError(DataError):
  """A checkpoint file that is not what it claims to be (truncated, corrupt header, ...)."""


class LoadError(DataError):
  """A checkpoint that does not fit the model: lists every offending key."""
