"""Adding a member to peft's `PeftType` enum, which `peft.register_peft_method` requires.

peft's registration function checks `name.upper() in PeftType`, and PeftType is a closed `str` Enum
meant for in-tree methods; the standard library has no API to extend an Enum, so this is hand-written
(the same steps as `aenum.extend_enum`). Because PeftType is a `str` enum, a saved adapter_config.json
holds the plain string and peft looks it up by that string when loading.
"""

from __future__ import annotations

from peft.utils.peft_types import PeftType


def extend_peft_type(name: str) -> PeftType:
    """Return `PeftType[name]`, adding it first if needed (idempotent)."""
    if name in PeftType.__members__:
        return PeftType[name]
    member = str.__new__(PeftType, name)
    member._name_ = name
    member._value_ = name
    member.__objclass__ = PeftType
    member.__init__(name)
    member._sort_order_ = len(PeftType._member_names_)
    type.__setattr__(PeftType, name, member)
    PeftType._member_map_[name] = member
    PeftType._value2member_map_[name] = member
    PeftType._member_names_.append(name)
    return member
