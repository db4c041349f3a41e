"""Project exceptions.

Every error caused by the user's input (config, data, paths) is a :class:`UserError`.
Its message names the offending value and the fix. The CLI prints it as one line on
stderr and exits with code 2, without a traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """Base class of errors caused by user input; the CLI maps it to exit code 2."""


class ConfigError(UserError):
    """An invalid configuration key, value or type."""


class DataError(UserError):
    """Data that cannot be used as given (missing column, bad value, empty split)."""


class CheckpointError(UserError):
    """A checkpoint that is missing, corrupt or does not match the run."""


class TrainingDiverged(UserError):
    """The loss became non-finite, almost always because a learning rate is too large."""
