"""The exceptions simplenn raises on purpose.

Every error the library raises deliberately derives from :class:`SimplennError`, so a
caller (and the command-line tools) can tell "the library refused, with a message"
apart from a bug. Each message names the cause and, where there is one, the fix.
"""

from __future__ import annotations


class SimplennError(Exception):
    """Base class of every error simplenn raises deliberately."""


class UnknownBackendError(SimplennError, ValueError):
    """A backend name that simplenn does not know; the message lists the valid names."""


class BackendUnavailableError(SimplennError, RuntimeError):
    """A known backend that cannot run here (library missing, no CUDA device, ...)."""


class DataError(SimplennError, ValueError):
    """A dataset file that is missing, malformed, truncated or inconsistent."""


class DownloadError(SimplennError, OSError):
    """Every mirror failed to deliver a file with the expected checksum."""


class ModelFileError(SimplennError, ValueError):
    """A saved model or checkpoint that cannot be read back."""


class TrainingDivergedError(SimplennError, FloatingPointError):
    """The training loss became NaN or infinite, or exploded while staying finite."""
