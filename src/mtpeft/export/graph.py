"""The run's model as ONE ONNX graph: (input_ids, attention_mask) -> pooled vectors and every head's answer.

The adapter is merged into the backbone's weights where the method allows it (peft's merge_and_unload),
else it stays in the graph as modules; the heads run on the pooled vectors inside the graph, calibrated
temperatures included. Exported with PyTorch's own exporter (`torch.onnx.export(dynamo=True)`, the
torch.export-based one, maintained and the default since PyTorch 2.9) with dynamic batch and sequence
axes, and optionally quantized to int8 weights by onnxruntime's dynamic quantizer.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mtpeft.export.folder import POOLED_OUTPUT
from mtpeft.export.rules import TASK_EXPORTS
from mtpeft.modeling.model import MultiTaskModel
from mtpeft.peft_methods import get_method
from mtpeft.peft_methods.base import AdaptedBackbone

EXAMPLE_CODE = ["def add(a, b):\n    return a + b", "int main(void) { return 0; }"]  # traced shapes only
EXTERNAL_DATA_BYTES = 1_800_000_000  # a graph near protobuf's 2 GB limit keeps its weights in a side file


class ExportedModel(nn.Module):
    """What the graph computes: the pooled vectors, then each exported head's answer from them."""

    def __init__(self, model: MultiTaskModel, outputs: dict[str, tuple[str, Callable[[Any, Any], Any]]]):
        super().__init__()
        self.model = model
        self.outputs = outputs  # output name -> (task, compute(head, pooled))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pooled = self.model.encode(input_ids, attention_mask)
        answers = [compute(self.model.heads[task], pooled) for task, compute in self.outputs.values()]
        return (pooled, *answers)

    @property
    def output_names(self) -> list[str]:
        return [POOLED_OUTPUT, *self.outputs]


def merge_adapter(model: MultiTaskModel, method: str) -> str:
    """Fold the run's module into the backbone's weights where its method allows it (in place); returns
    how the module ends up in the graph, for export.json."""
    adapted = model.backbone
    if not getattr(get_method(method), "merges_on_export", False):
        return "in the graph"
    merged = adapted.base_model.merge_and_unload()
    model.backbone = AdaptedBackbone(
        merged, method=adapted.method, options=adapted.options, info=adapted.info
    )
    return "merged into the weights"


def graph_model(model: MultiTaskModel) -> ExportedModel:
    """The graph's module: an output per exported head that the graph answers (pair heads read pooled)."""
    outputs = {}
    for name, spec in model.tasks.items():
        rule = TASK_EXPORTS[spec.kind]
        if rule.output is not None and rule.compute is not None:
            outputs[rule.output(name)] = (name, rule.compute)
    return ExportedModel(model, outputs).eval()


def export_onnx(graph: ExportedModel, tokenizer: Any, path: Path, *, max_positions: int | None) -> None:
    """Write the graph to `path` with dynamic batch and sequence axes (sequence up to `max_positions`)."""
    example = tokenizer(EXAMPLE_CODE, padding=True, return_tensors="pt")
    batch = torch.export.Dim("batch")
    sequence = (
        torch.export.Dim("sequence", max=max_positions) if max_positions else torch.export.Dim("sequence")
    )
    axes = {0: batch, 1: sequence}
    size = sum(p.numel() * p.element_size() for p in graph.parameters())
    # The exporter reports each of its steps on stdout and logs warnings about ops it does not need
    # (torchvision's): not the user's business. Its errors still raise.
    with _quiet(), torch.inference_mode():
        torch.onnx.export(
            graph,
            (example["input_ids"], example["attention_mask"]),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=graph.output_names,
            dynamic_shapes={"input_ids": axes, "attention_mask": axes},
            dynamo=True,
            external_data=size > EXTERNAL_DATA_BYTES,
            optimize=True,
            verbose=False,
        )


def quantize_int8(fp32: Path, int8: Path) -> None:
    """Dynamic int8 quantization of the graph's weights (onnxruntime.quantization.quantize_dynamic):
    weights stored as int8, activations quantized on the fly per batch; no calibration data needed."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():
        quantize_dynamic(
            str(fp32),
            str(int8),
            weight_type=QuantType.QInt8,
            use_external_data_format=fp32.with_name(fp32.name + ".data").exists(),
        )


@contextlib.contextmanager
def _quiet():
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "root", "")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch's own deprecations inside its exporter
            warnings.simplefilter("ignore", UserWarning)  # "axis name batch will not be used", and the like
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
