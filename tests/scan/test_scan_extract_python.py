"""Python extraction: what a user scanning a Python project should see."""

from __future__ import annotations

import inspect
import json.decoder
import sysconfig
import textwrap
from pathlib import Path

from mtpeft.scan.extract import extract_source, extract_tree
from mtpeft.scan.languages import LANGUAGES
from mtpeft.scan.units import CodeUnit, content_hash

PY = LANGUAGES["python"]


def units_of(source: str, path: str = "pkg/mod.py") -> dict[str, CodeUnit]:
    units = extract_source(path, textwrap.dedent(source).encode(), PY)
    return {u.name: u for u in units}


def test_functions_methods_and_nested_classes_have_qualified_names() -> None:
    units = units_of(
        """
        def top(a):
            def inner():
                return a
            return inner

        class Outer:
            def m(self):
                return lambda x: x

            class Inner:
                async def deep(self):
                    pass

        if True:
            def conditional():
                pass
        """
    )
    assert set(units) == {"top", "Outer.m", "Outer.Inner.deep", "conditional"}
    assert units["top"].kind == "function"
    assert units["Outer.m"].kind == "method"
    assert units["Outer.Inner.deep"].kind == "method"
    # Nested functions and lambdas stay inside their enclosing unit.
    assert "def inner" in units["top"].code


def test_positions_are_one_based_and_code_is_dedented() -> None:
    units = units_of(
        """\
        class C:
            @staticmethod
            def m():
                return 1
        """
    )
    m = units["C.m"]
    # The unit starts at its decorator (line 2, column 5) and ends after `return 1` (exclusive column).
    assert (m.start_line, m.start_column, m.end_line, m.end_column) == (2, 5, 4, 17)
    assert m.code.splitlines()[0] == "@staticmethod"
    assert m.code.splitlines()[1] == "def m():"


def test_columns_count_characters_not_bytes() -> None:
    units = units_of('class C:\n    x = "é"; y = 2\n    def m(self): return "ééé"\n')
    m = units["C.m"]
    assert m.start_column == 5
    assert m.end_column == len('    def m(self): return "ééé"') + 1


def test_tests_in_a_test_file_and_in_testcase_subclasses() -> None:
    test_file = units_of(
        """
        import unittest

        def test_top():
            pass

        def helper():
            pass

        class TestThing:
            def test_method(self):
                pass
            def setup_method(self):
                pass

        class Base(unittest.TestCase):
            def testOld(self):
                pass

        class Derived(Base):
            def test_more(self):
                pass
        """,
        path="tests/test_thing.py",
    )
    kinds = {name: u.kind for name, u in test_file.items()}
    assert kinds == {
        "test_top": "test",
        "helper": "function",
        "TestThing.test_method": "test",
        "TestThing.setup_method": "method",
        "Base.testOld": "test",
        "Derived.test_more": "test",
    }


def test_test_named_function_outside_test_files_is_a_function() -> None:
    units = units_of(
        """
        def test_connection(host):
            return host

        class Checks(TestCase):
            def test_it(self):
                pass
        """,
        path="app/net.py",
    )
    assert units["test_connection"].kind == "function"
    assert units["Checks.test_it"].kind == "test"  # a TestCase is a test wherever it lives


def test_content_hash_ignores_indentation_and_blank_lines() -> None:
    a = units_of("def f():\n    return 1\n")["f"]
    b = units_of("class K:\n    def f():\n\n        return 1\n")["K.f"]
    assert a.content_hash == b.content_hash == content_hash("def f():\n  return 1")


def test_matches_inspect_on_the_standard_library_json_package() -> None:
    root = Path(sysconfig.get_paths()["stdlib"]) / "json"
    units = {(u.path, u.name): u for u in extract_tree(root).units}
    method = units[("decoder.py", "JSONDecoder.decode")]
    lines, start = inspect.getsourcelines(json.decoder.JSONDecoder.decode)
    assert method.kind == "method"
    assert (method.start_line, method.end_line) == (start, start + len(lines) - 1)
    assert method.code == textwrap.dedent("".join(lines)).rstrip("\n")
