"""Errors a user can hit. Each one says where (file, line, field) and what to do."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

SHOWN_CHARS = 80  # user text quoted in a message is cut to this length
SHOWN_ITEMS = 8  # items of a user's list quoted in a message; the rest are counted


def shorten(text: object, limit: int = SHOWN_CHARS, *, quoted: bool = True) -> str:
    """`text` as repr (or as is, with quoted=False), cut to `limit` characters: user text in a message
    stays one readable line (a 5 MB id must not make a 5 MB message)."""
    if isinstance(text, int) and not isinstance(text, bool) and text.bit_length() > 4 * limit:
        return f"<an integer of about {int(text.bit_length() * 0.30103) + 1} digits>"  # repr may refuse it
    shown = repr(text) if quoted else str(text)  # repr escapes control characters and surrogates
    if not quoted:  # still one line, and no terminal control sequence: those characters escaped
        cut = len(shown) > limit
        shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in shown[:limit])
        return shown[: limit - 3] + "..." if cut or len(shown) > limit else shown
    if len(shown) <= limit:
        return shown
    return shown[: limit - 4] + "..." + shown[-1]


def shorten_list(items: Iterable[object], limit: int = SHOWN_ITEMS, *, quoted: bool = True) -> str:
    """Up to `limit` items, each shortened, then "... and N more": a label set of 90,000 names (or a folder
    of 3,000 files) stays one line in a message."""
    values = list(items)
    shown = ", ".join(shorten(item, 40, quoted=quoted) for item in values[:limit])
    rest = len(values) - limit
    return shown + (f" ... and {rest} more" if rest > 0 else "")


def _field(field: str | None) -> str | None:
    """A field name as shown: its own text when short and printable (a hostile key may be megabytes)."""
    if field is None or (len(field) <= 60 and field.isprintable()):
        return field
    return shorten(field, 60, quoted=False)


class MtpeftError(Exception):
    """Base class of every error mtpeft raises on purpose.

    The message says where (file, line, field, snippet or task) and what to do; the command line prints
    it as one `error:` line and exits with status 2, never a traceback. Catch this to catch them all.
    """


class DataError(MtpeftError):
    """A problem in an input data file, located as precisely as we can.

    Attributes:
        path: The file (None when not from a file).
        line: The line in it, 1-based, where known.
        field: The record's field, where known.
        reason: The message without the location.
        hint: What to do, where there is something to say.
    """

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
        self.field = _field(field)
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
    """A bad field in a task, train or study config (or an argument naming something that does not exist).

    Attributes:
        path: The config file, where known.
        field: The field to fix, where known.
        reason: The message without the location.
    """

    def __init__(self, message: str, *, path: str | Path | None = None, field: str | None = None) -> None:
        self.path = str(path) if path is not None else None
        self.field = _field(field)
        self.reason = message  # without the location, so a caller can re-locate it (e.g. in its config file)
        where = self.path or "<config>"
        if self.field:
            where += f", field '{self.field}'"
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
    """Bad input handed to a trained run (`Run.analyze`, `compare`, `embed`, `generate`, `search`; `predict`).

    Not a str, an empty list, a lone surrogate, blank code, an unknown task, or a task the method does not
    answer; the message names the snippet or task and the method to use instead.
    """


class MissingExtra(MtpeftError):
    """A command or call needs packages of an optional extra that this installation lacks (the torch-free
    `mtpeft[onnx]` install running something only `mtpeft[train]` can); the message says what to install."""


class ExportMismatch(MtpeftError):
    """An exported graph does not answer as the PyTorch run does (checked by `mtpeft export` on the run's
    test split); nothing is written."""
