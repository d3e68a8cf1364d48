"""gitignore-like exclude patterns."""

from __future__ import annotations

import pytest

from mtpeft.scan.ignore import PathFilter


@pytest.mark.parametrize(
    ("pattern", "path", "is_dir", "excluded"),
    [
        ("node_modules", "a/b/node_modules", True, True),  # no '/': any depth
        ("*.min.js", "web/app.min.js", False, True),
        ("*.py", "a/b.pyc", False, False),
        ("build/", "build", True, True),
        ("build/", "build", False, False),  # trailing '/': directories only
        ("/build", "build", True, True),
        ("/build", "src/build", True, False),  # leading '/': anchored at the root
        ("src/gen/*.c", "src/gen/x.c", False, True),
        ("src/gen/*.c", "src/gen/sub/x.c", False, False),  # '*' does not cross '/'
        ("src/**/x.c", "src/a/b/x.c", False, True),
        ("src/**/x.c", "src/x.c", False, True),
        ("test_?.py", "test_a.py", False, True),
        ("[ab].py", "a.py", False, True),
        ("[!ab].py", "a.py", False, False),
        ("[red].py", "r.py", False, True),  # a character class, as in git
    ],
)
def test_patterns(pattern: str, path: str, is_dir: bool, excluded: bool) -> None:
    assert PathFilter([pattern], use_defaults=False).excluded(path, is_dir=is_dir) is excluded


def test_defaults_can_be_switched_off() -> None:
    assert PathFilter().excluded(".venv", is_dir=True)
    assert not PathFilter(use_defaults=False).excluded(".venv", is_dir=True)


def test_negation_is_rejected_with_a_message() -> None:
    with pytest.raises(ValueError, match="negation"):
        PathFilter(["!keep.py"])
