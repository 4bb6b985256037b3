"""Errors that name the problem in one paragraph (the CLI prints them without a traceback)."""

__all__ = ["HelmholtzError", "ModelError", "EngineError", "InitializationError", "OptionError",
           "CheckpointError", "RunError", "ResultFileError", "DistributedError"]


class HelmholtzError(Exception):
    """Base class of every error helmholtz raises on purpose."""


class ModelError(HelmholtzError, ValueError):
    """The model cannot be traced or turned into a log density."""


class EngineError(HelmholtzError, KeyError):
    """Unknown engine name or unusable engine object."""

    def __str__(self):  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


class OptionError(HelmholtzError, ValueError):
    """An engine or driver option has an invalid value."""


class InitializationError(HelmholtzError, FloatingPointError):
    """The log density is NaN or −inf at every candidate initial point."""


class CheckpointError(HelmholtzError, ValueError):
    """A checkpoint was written by a different run (or cannot be read)."""


class RunError(HelmholtzError, RuntimeError):
    """A run did not finish cleanly or its result cannot be trusted (raised on request,
    by ``Status.raise_for_status`` or ``infer(..., raise_on_error=True)``); ``status``
    holds the Status that caused it."""

    def __init__(self, message: str, status=None):
        super().__init__(message)
        self.status = status


class ResultFileError(HelmholtzError, ValueError):
    """A file is not a helmholtz result file, or is a corrupt one."""


class DistributedError(HelmholtzError, RuntimeError):
    """The multi-process runtime could not start (no coordinator, bad settings)."""
