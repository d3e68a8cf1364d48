"""C and C++ extraction: functions, methods, namespaces, test macros."""

from __future__ import annotations

from mtpeft.scan.extract import extract_source
from mtpeft.scan.languages import LANGUAGES, language_for
from mtpeft.scan.units import CodeUnit


def units_of(source: str, language: str, path: str = "src/x.c") -> dict[str, CodeUnit]:
    return {u.name: u for u in extract_source(path, source.encode(), LANGUAGES[language])}


def test_c_functions_pointer_returns_and_preprocessor_blocks() -> None:
    units = units_of(
        """
#include <string.h>
int prototype(int a);
static char *dup(const char *s) {
    char *d = malloc(strlen(s) + 1);
    strcpy(d, s);
    return d;
}
#ifdef FEATURE
void feature(void) { }
#else
void fallback(void) { }
#endif
int (*get_handler(void))(int) { return 0; }
""",
        "c",
    )
    assert set(units) == {"dup", "feature", "fallback", "get_handler"}
    dup = units["dup"]
    assert (dup.kind, dup.start_line, dup.end_line) == ("function", 4, 8)
    assert dup.code.startswith("static char *dup(")


def test_c_columns_count_characters() -> None:
    units = units_of("/* é */ int f(void) { return 0; }\n", "c")
    f = units["f"]
    assert f.start_column == 9  # 8 characters before it, though 9 bytes
    assert f.code == "int f(void) { return 0; }"  # other code on its first line is not part of it


def test_cpp_namespaces_classes_and_out_of_line_methods() -> None:
    units = units_of(
        """
namespace ns { namespace inner {
class Foo : public Bar {
 public:
  Foo() : x(1) {}
  ~Foo() {}
  int get() const { return x; }
  bool operator<(const Foo& o) const { return x < o.x; }
  template <typename T> T conv() { return T(); }
  virtual void pure() = 0;
  struct Nested { void m() {} };
};
}}
int ns::inner::Foo::out(int a) { auto l = [](int b) { return b; }; return l(a); }
template <class T> static inline T* tf(T* p) { return p; }
extern "C" { void cfun(void) {} }
""",
        "cpp",
        path="src/foo.cpp",
    )
    assert set(units) == {
        "ns::inner::Foo::Foo",
        "ns::inner::Foo::~Foo",
        "ns::inner::Foo::get",
        "ns::inner::Foo::operator<",
        "ns::inner::Foo::conv",
        "ns::inner::Foo::Nested::m",
        "ns::inner::Foo::out",
        "tf",
        "cfun",
    }
    assert units["ns::inner::Foo::get"].kind == "method"
    assert units["ns::inner::Foo::out"].kind == "method"  # qualified out-of-line definition
    assert units["tf"].kind == "function"
    assert "[](int b)" in units["ns::inner::Foo::out"].code  # the lambda is part of its function


def test_gtest_and_catch2_tests() -> None:
    units = units_of(
        """
TEST(MathSuite, Adds) {
  EXPECT_EQ(2, 1 + 1);
}
TEST_F(Fixture, UsesFixture) { ASSERT_TRUE(ready()); }
TEST_CASE("vectors can be sized", "[vector]") {
  REQUIRE(v.size() == 5);
}
void helper() {}
""",
        "cpp",
        path="test/math_test.cc",
    )
    assert {n: u.kind for n, u in units.items()} == {
        "MathSuite.Adds": "test",
        "Fixture.UsesFixture": "test",
        "vectors can be sized": "test",
        "helper": "function",
    }
    gtest = units["MathSuite.Adds"]
    assert (gtest.start_line, gtest.end_line) == (2, 4)
    catch = units["vectors can be sized"]
    assert (catch.start_line, catch.end_line) == (6, 8)
    assert catch.code.startswith('TEST_CASE("vectors can be sized"') and catch.code.endswith("}")


def test_extension_registry() -> None:
    assert language_for("a.py").name == "python"
    assert language_for("A.JAVA").name == "java"
    assert language_for("x.c").name == "c"
    assert language_for("x.h").name == "cpp"  # headers: the C++ grammar reads C declarations too
    assert language_for("x.hpp").name == "cpp"
    assert language_for("README.md") is None
    assert language_for("Makefile") is None
