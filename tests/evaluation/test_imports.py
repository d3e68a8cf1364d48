"""Package boundaries a reader relies on: evaluation never pulls in training; torch-free stays torch-free."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import mtpeft.evaluation

EVALUATION_MODULES = sorted(
    module.name for module in pkgutil.iter_modules(mtpeft.evaluation.__path__, "mtpeft.evaluation.")
)
# What `mtpeft data ...` and `mtpeft study --dry-run` import: they must work without loading torch.
TORCH_FREE_MODULES = [
    "mtpeft.layout",
    "mtpeft.config",
    "mtpeft.tasks.kinds",
    "mtpeft.data.formats.records",
    "mtpeft.data.inspect",
    "mtpeft.study.estimate",
]


def _loaded_after_import(module: str, prefixes: tuple[str, ...]) -> list[str]:
    code = f"import sys, {module}\nprint('\\n'.join(m for m in sys.modules if m.startswith({prefixes!r})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.split()


@pytest.mark.parametrize("module", EVALUATION_MODULES)
def test_evaluation_module_does_not_import_training(module):
    assert _loaded_after_import(module, ("mtpeft.training",)) == []


@pytest.mark.parametrize("module", TORCH_FREE_MODULES)
def test_module_used_by_torch_free_commands_does_not_import_torch(module):
    assert _loaded_after_import(module, ("torch",)) == []
