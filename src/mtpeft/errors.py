"""Errors a user can hit. Each one says where (file, line, field) and what to do."""

from __future__ import annotations

from pathlib import Path


class MtpeftError(Exception):
    """Base class: the CLI prints these as one message, never a traceback."""


class DataError(MtpeftError):
    """A problem in an input data file, located as precisely as we can."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        self.hint = hint
        self.reason = message
        super().__init__(self._format())

    def _format(self) -> str:
        where = self.path or "<input>"
        if self.line is not None:
            where += f", line {self.line}"
        if self.field is not None:
            where += f", field '{self.field}'"
        text = f"{where}: {self.reason}"
        if self.hint:
            text += f" ({self.hint})"
        return text


class ConfigError(MtpeftError):
    """A bad field in a task, train or study config."""

    def __init__(self, message: str, *, path: str | Path | None = None, field: str | None = None) -> None:
        self.path = str(path) if path is not None else None
        self.field = field
        self.reason = message  # without the location, so a caller can re-locate it (e.g. in its config file)
        where = self.path or "<config>"
        if field:
            where += f", field '{field}'"
        super().__init__(f"{where}: {message}")


class ModelLoadError(MtpeftError):
    """A model could not be loaded (unknown name, no network, missing package)."""


class TrainingDiverged(MtpeftError):
    """The loss, the gradient norm or the weights became inf/NaN: training stopped before the optimiser
    applied it (a NaN gradient poisons AdamW's moments for good, so there is no skipping past it)."""

    def __init__(self, message: str, *, step: int | None = None) -> None:
        self.step = step  # the optimiser step it happened at, where known
        super().__init__(message)


class NonFiniteMetric(MtpeftError):
    """A metric is inf or NaN: such a number is never recorded as a result."""


class DamagedFiles(MtpeftError):
    """A saved directory (a checkpoint, a run's best/) does not match its manifest."""


class DamagedStore(DamagedFiles):
    """The results store (mtpeft.sqlite) is not a readable SQLite database."""


class DiskFull(MtpeftError):
    """A write failed for want of space: says how much is needed and what is left half-written (nothing)."""


class RunLocked(MtpeftError):
    """Another process is training the same run (same directory) right now."""


class InputError(MtpeftError):
    """Bad input handed to a trained run (`mtpeft.load(...)`'s analyze, embed, compare; `mtpeft predict`)."""
