"""Errors that name the problem in one paragraph (the CLI prints them without a traceback)."""

__all__ = ["HelmholtzError", "ModelError", "EngineError", "InitializationError", "OptionError",
           "CheckpointError", "RunError"]


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
    """A run stopped early or its result cannot be trusted (raised on request)."""
