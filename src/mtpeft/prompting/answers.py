"""The answer log: one JSON line per answer, appended as answers come, so a stopped run resumes.

A line holds the task, the item's key, a hash of the exact prompt it answered, and the answer (generated
text or choice scores, tokens, seconds, truncated, error). On resume an item counts as answered only when
its latest line has no error and the same prompt hash: a changed template or shot choice is asked again,
never scored with a stale answer, and a failed request is retried.
A line cut short by a kill is skipped (it is the one answer that gets asked again).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

from mtpeft.prompting.backends.base import Prompt

ANSWERS_FILE = "answers.jsonl"


def prompt_hash(prompt: Prompt, extra: str = "") -> str:
    """sha256 of the prompt's messages (and of `extra`, e.g. the scored choices)."""
    canonical = json.dumps([prompt, extra], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:16]


@dataclass
class AnswerRecord:
    task: str
    key: str  # the item within the task: "<example index>" or "<query index>/<candidate position>"
    sha: str
    text: str | None = None  # generate mode
    scores: list[float] | None = None  # score mode: log-likelihood of each choice
    tokens_in: int = 0
    tokens_out: int = 0
    seconds: float = 0.0
    truncated: bool = False
    error: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def answered(self) -> bool:
        return self.error is None


class AnswerLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[tuple[str, str], AnswerRecord]:
        """The latest record of every (task, key) in the file."""
        records: dict[tuple[str, str], AnswerRecord] = {}
        if not self.path.is_file():
            return records
        with self.path.open(encoding="utf-8") as lines:
            for line in lines:
                record = _parse(line)
                if record is not None:
                    records[(record.task, record.key)] = record
        return records

    def append(self, records: Iterable[AnswerRecord]) -> None:
        text = "".join(json.dumps(asdict(r), ensure_ascii=False) + "\n" for r in records)
        if not text:
            return
        with self.path.open("a+b") as out:
            if out.tell() and _last_byte(out) != b"\n":  # a line cut short by a kill: end it first
                out.write(b"\n")
            out.write(text.encode("utf-8", "surrogatepass"))
            out.flush()


def _last_byte(handle: BinaryIO) -> bytes:
    handle.seek(-1, 2)
    return handle.read(1)


def _parse(line: str) -> AnswerRecord | None:
    try:
        data = json.loads(line)
        return AnswerRecord(**data)
    except (ValueError, TypeError):  # a half-written last line, or a line of another version
        return None
