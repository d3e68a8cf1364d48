"""mtpeft: one language model, many code-analysis skills.

    import mtpeft
    run = mtpeft.load("workspace/runs/<run>")   # see mtpeft.api
    run.analyze(["def f(x): return eval(x)"])
    runs = mtpeft.load_many([dir_a, dir_b])   # runs on one base model share one copy of it

`import mtpeft` stays light (no torch): `load` and the inference classes are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Names served lazily from mtpeft.api, which imports torch and transformers.
_API_NAMES = ("load", "load_many", "Run", "Prediction", "TaskInfo")

if TYPE_CHECKING:
    from mtpeft.api import Prediction, Run, TaskInfo, load, load_many


def __getattr__(name: str) -> Any:
    if name in _API_NAMES:
        from mtpeft import api

        return getattr(api, name)
    raise AttributeError(f"module 'mtpeft' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API_NAMES])


__all__ = ["Prediction", "Run", "TaskInfo", "__version__", "load", "load_many"]
