"""CodeXGLUE code-refinement (Bugs2Fix): line-aligned `<split>.buggy-fixed.buggy` and
`<split>.buggy-fixed.fixed`, one method per line -> Example(code=buggy, target=fixed).
"""

from __future__ import annotations

from pathlib import Path

from mtpeft.data.example import Example
from mtpeft.data.formats.base import register_format
from mtpeft.data.formats.textio import order_splits, read_text, split_file, split_files, text_lines
from mtpeft.errors import ConfigError, DataError
from mtpeft.tasks.spec import TaskKind, TaskSpec

BUGGY = ".buggy-fixed.buggy"
FIXED = ".buggy-fixed.fixed"


@register_format
class CodeRefinementReader:
    name = "code-refinement"
    description = "<split>.buggy-fixed.buggy and <split>.buggy-fixed.fixed, line-aligned, one method per line"

    def splits(self, root: Path) -> list[str]:
        # A split with only one of its two files is listed, so reading it names the missing partner.
        return order_splits([*split_files(root, (BUGGY,)), *split_files(root, (FIXED,))])

    def read(self, root: Path, split: str, task: TaskSpec) -> list[Example]:
        if task.kind != TaskKind.GENERATION:
            raise ConfigError(
                f"the {self.name} format holds buggy -> fixed pairs for generation tasks, "
                f"not {task.kind} ones",
                field="kind",
            )
        buggy_path = split_file(root, split, (BUGGY,), self.name)
        fixed_path = split_file(root, split, (FIXED,), self.name)
        buggy, fixed = text_lines(read_text(buggy_path)), text_lines(read_text(fixed_path))
        if len(buggy) != len(fixed):
            raise DataError(
                f"has {len(buggy)} lines but {fixed_path} has {len(fixed)}; "
                "the two files must be line-aligned",
                path=buggy_path,
                hint="line N of the .buggy file pairs with line N of the .fixed file",
            )
        if not buggy:
            raise DataError("file is empty (no methods)", path=buggy_path)
        return [
            Example(
                id=f"{split}:{line_no}",
                code=_method(code, buggy_path, line_no, "buggy"),
                target=_method(target, fixed_path, line_no, "fixed"),
            )
            for line_no, (code, target) in enumerate(zip(buggy, fixed, strict=True), start=1)
        ]


def _method(line: str, path: Path, line_no: int, side: str) -> str:
    # Stripped as CodeXGLUE's own reader does (lines end with a space before the newline).
    text = line.strip()
    if not text:
        raise DataError("empty line: every line must hold one method", path=path, line=line_no, field=side)
    return text
