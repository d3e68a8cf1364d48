"""Java extraction: methods, constructors, JUnit tests."""

from __future__ import annotations

from mtpeft.scan.extract import extract_source
from mtpeft.scan.languages import LANGUAGES
from mtpeft.scan.units import CodeUnit

JAVA = LANGUAGES["java"]


def units_of(source: str) -> dict[str, CodeUnit]:
    return {u.name: u for u in extract_source("src/Foo.java", source.encode(), JAVA)}


def test_a_test_annotated_method_is_one_test_unit_with_its_lines() -> None:
    source = """package a;

import org.junit.Test;

public class FooTest {
    @Test
    public void addsNumbers() {
        assertEquals(2, 1 + 1);
    }

    private int helper() { return 1; }
}
"""
    units = units_of(source)
    tests = [u for u in units.values() if u.kind == "test"]
    assert len(tests) == 1
    test = tests[0]
    assert test.name == "FooTest.addsNumbers"
    assert (test.start_line, test.end_line) == (6, 9)  # annotation line through closing brace
    assert test.code.startswith("@Test\npublic void addsNumbers()")
    assert units["FooTest.helper"].kind == "method"


def test_junit5_annotations_qualified_or_with_arguments_and_junit3() -> None:
    units = units_of(
        """
class A {
    @org.junit.jupiter.api.Test void plain() {}
    @ParameterizedTest @ValueSource(ints = {1, 2}) void param(int x) {}
    @RepeatedTest(3) void repeated() {}
    @Override public String toString() { return ""; }
}
class Old extends junit.framework.TestCase {
    public void testLegacy() {}
    public void notATest() {}
}
"""
    )
    kinds = {name: u.kind for name, u in units.items()}
    assert kinds == {
        "A.plain": "test",
        "A.param": "test",
        "A.repeated": "test",
        "A.toString": "method",
        "Old.testLegacy": "test",
        "Old.notATest": "method",
    }


def test_constructors_nested_types_enums_and_interfaces() -> None:
    units = units_of(
        """
public class Outer {
    public Outer(int x) { this.x = x; }
    abstract void noBody();
    static class Inner {
        void m() {
            Runnable r = new Runnable() { public void run() { } };
            Runnable l = () -> {};
        }
    }
    interface Api { default void d() {} void abstractOne(); }
}
enum Color { RED { void paint() {} }; void common() {} }
record Point(int x, int y) { Point { } }
"""
    )
    assert set(units) == {
        "Outer.Outer",
        "Outer.Inner.m",
        "Outer.Api.d",
        "Color.RED.paint",
        "Color.common",
        "Point.Point",
    }
    # Anonymous-class methods and lambdas are inside Outer.Inner.m, not units of their own.
    assert "public void run()" in units["Outer.Inner.m"].code
