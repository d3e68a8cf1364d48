"""The generic registry: a taken name is refused, an unknown one is a message listing the known ones."""

from __future__ import annotations

import pytest

from mtpeft.errors import ConfigError
from mtpeft.registry import Registry


def test_second_registration_under_a_name_is_refused():
    registry: Registry[int] = Registry("colour")
    registry.register("red", 1)
    with pytest.raises(ValueError, match="a colour named 'red' is already registered"):
        registry.register("red", 2)
    assert registry["red"] == 1


def test_unknown_name_lists_the_known_ones_and_the_field():
    registry: Registry[int] = Registry("colour", field="paint")
    registry.register("red", 1)
    registry.register("blue", 2)
    with pytest.raises(ConfigError, match=r"field 'paint'.*unknown colour 'green'; known: blue, red"):
        registry["green"]


def test_object_of_the_wrong_type_is_refused():
    registry: Registry[int] = Registry("colour", base=int)
    with pytest.raises(TypeError, match="must be a int"):
        registry.register("red", "#f00")  # type: ignore[arg-type]
