"""What extraction produces: code units (functions, methods, tests) and the files it skipped.

Paths are text decoded from the file system's bytes (``os.fsdecode``): a file name that is not
UTF-8 keeps its bad bytes as lone surrogates (U+DC80-U+DCFF), which no encoder writes. Every output
shows them through :func:`readable` (``bad\\xff.py``); SARIF's URIs are percent-encoded from the
raw bytes instead (sarif.py).

Positions follow SARIF's conventions so that every output format can use them unchanged: lines
and columns are 1-based, columns count Unicode code points, and ``end_column`` is the column just
after the last character of the unit (exclusive), as SARIF's ``region.endColumn`` is.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

UNIT_KINDS = ("function", "method", "test")


_SURROGATE = re.compile("[\ud800-\udfff]")
_DEL_AND_C1 = re.compile("[\x7f-\x9f]")  # json leaves them raw; U+009B is a terminal's CSI


def readable(text: str, backslash: str = "\\") -> str:
    """``text`` with lone surrogates (undecodable bytes of a file name) shown as ``\\xNN`` escapes.

    ``backslash`` is how the output writes one backslash: ``"\\\\"`` inside JSON text.
    """
    return _SURROGATE.sub(lambda m: _escape_surrogate(m.group(), backslash), text)


def _escape_surrogate(char: str, backslash: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's surrogateescape: one raw byte each
        return f"{backslash}x{code - 0xDC00:02x}"
    return f"{backslash}u{code:04x}"


def json_text(value: Any) -> str:
    """``value`` as indented JSON that any UTF-8 writer accepts and no terminal interprets.

    Non-ASCII text stays readable (not ``\\uXXXX``); lone surrogates, which only file names carry and
    only inside strings, become ``\\xNN`` (see :func:`readable`); DEL and C1 controls become
    ``\\u00NN``, which decodes to the same character. C0 controls are escaped by json itself.
    """
    text = json.dumps(value, indent=2, ensure_ascii=False)
    text = readable(text, backslash="\\\\")
    return _DEL_AND_C1.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


@dataclass(frozen=True)
class CodeUnit:
    """One function, method or test method found in a source file."""

    path: str  # relative to the scanned root, '/'-separated
    language: str  # a key of mtpeft.scan.languages.LANGUAGES
    name: str  # qualified: Class.method (Python, Java), ns::Class::method (C++), Suite.Test (gtest)
    kind: str  # one of UNIT_KINDS
    start_line: int
    start_column: int
    end_line: int
    end_column: int
    code: str

    @property
    def content_hash(self) -> str:
        """Hash of the normalised code: equal for the same function moved or re-indented."""
        return content_hash(self.code)

    @property
    def lines(self) -> int:
        return self.end_line - self.start_line + 1

    @property
    def location(self) -> str:
        return f"{self.path}:{self.start_line}"


@dataclass(frozen=True)
class SkippedFile:
    """A file (or directory, or link) that was not extracted, and why; never fatal."""

    path: str
    reason: str


def normalise_code(code: str) -> str:
    """Code with each line stripped and blank lines dropped.

    Used for hashes and fingerprints, so that re-indenting a function, changing line endings or
    adding blank lines does not make it a "new" function for a re-scan.
    """
    return "\n".join(line.strip() for line in code.splitlines() if line.strip())


def content_hash(code: str) -> str:
    return hashlib.sha256(normalise_code(code).encode("utf-8")).hexdigest()[:16]
