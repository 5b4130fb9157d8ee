"""The one base class for errors a user can fix (bad config value, missing data file, empty workdir, bad prompt).

Entry points catch `UserError` once and print its message (exit 2, no traceback); any other exception is a bug
and keeps its traceback. Each kind also derives from the builtin it refines, so `except ValueError` keeps working.
"""
from __future__ import annotations


class UserError(Exception):
    """Something the user can fix; the message says what was wrong and how to fix it. `field` (optional) names the
    setting at fault in a request's terms (e.g. "steps", "max_tokens"): the server's 400 reports it as `param`."""

    def __init__(self, message: str = "", *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ConfigError(UserError, ValueError):
    """A config value or command-line flag is invalid."""


class MissingDataError(UserError, FileNotFoundError):
    """Data files a task reads are missing (the message names them and how to prepare them)."""


class ModelFilesError(UserError, FileNotFoundError):
    """A model directory, its config.json or its weights are missing (or cannot be fetched)."""


class NoCheckpointError(UserError, FileNotFoundError):
    """A workdir has no config or no complete checkpoint."""


class CheckpointMismatchError(UserError, ValueError):
    """A HuggingFace checkpoint does not match the model config (missing keys, shapes)."""


class InputError(UserError, ValueError):
    """A prompt, input file or data split cannot be used as given."""


class TrainingError(UserError, RuntimeError):
    """Training stopped (e.g. too many non-finite steps); the last good checkpoint is kept."""
