"""`mtpeft export RUN_DIR --out DIR`: write the export folder (see mtpeft.export), checked before it lands.

Order: refuse what cannot be exported (from the registries, before any model loads); read the test
examples the check needs (a missing data file fails here, not after the export); load the run and
collect the PyTorch answers on them; merge the adapter and export the graph into a scratch folder beside
DIR; load that folder with the torch-free runtime and compare (fp32 must agree, or nothing is written);
quantize and measure again where asked; write export.json and the manifest last; rename into place.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from mtpeft import __version__
from mtpeft.calibration_file import CALIBRATION_DIR as RUN_CALIBRATION_DIR
from mtpeft.errors import ConfigError, DataError, InputError
from mtpeft.export import agreement
from mtpeft.export.folder import (
    CALIBRATION_DIR,
    EXPORT_FILE,
    FORMAT,
    GRAPH_FILE,
    PAIR_HEADS_FILE,
    POOLED_OUTPUT,
    TOKENIZER_DIR,
    TOKENIZER_FILE,
    ExportFolder,
    is_export,
)
from mtpeft.export.rules import TASK_EXPORTS, refusals, refuse
from mtpeft.manifest import MANIFEST_FILE, write_manifest

QUANTIZATIONS = ("int8",)
DEFAULT_CHECK_EXAMPLES = 256  # per task, from the start of its test split
CHECK_SPLIT = "test"


@dataclass
class ExportResult:
    folder: Path
    meta: dict[str, Any]  # export.json as written
    unsafe: list[str]  # int8: tasks whose metric dropped by more than agreement.INT8_SAFE_DROP
    seconds: float


def export_run(
    run_dir: Path,
    out: Path,
    *,
    quantize: str | None = None,
    check_examples: int = DEFAULT_CHECK_EXAMPLES,
) -> ExportResult:
    """Export the run at `run_dir` into the folder `out` (created, or an older export replaced)."""
    from mtpeft.modeling.build import read_saved

    started = time.perf_counter()
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise InputError(
            f"--quantize {quantize!r}: choose {', '.join(QUANTIZATIONS)} (or leave it out: fp32)"
        )
    check_target(out, run_dir)
    saved = read_saved(run_dir)  # best/ and calibration/ checked against their manifests
    kinds = {name: spec["kind"] for name, spec in saved.meta["tasks"].items()}
    refuse(run_dir, refusals(saved.config.method, kinds, list(saved.meta.get("lm_tasks", {}))))
    examples = _check_examples(saved, check_examples)
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        meta, unsafe = _write(saved, scratch, examples, quantize)
        write_manifest(scratch)  # last: its presence says the folder is whole
        check_target(out, run_dir)  # again: the export took a while, and the folder may have changed
        _swap_in(scratch, out)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)  # our own scratch folder: nothing of the user's in it
        raise
    return ExportResult(out.resolve(), meta, unsafe, time.perf_counter() - started)


def _check_examples(saved: Any, count: int) -> dict[str, list[Any]]:
    """The first `count` test examples of each task: what the agreement check answers on both sides."""
    from mtpeft.modeling.task_data import resolve_tasks

    try:
        tasks = resolve_tasks(saved.config)
        return {
            name: task.examples(CHECK_SPLIT, seed=saved.config.seed)[:count] for name, task in tasks.items()
        }
    except (DataError, ConfigError, OSError) as err:
        raise ConfigError(
            f"the export is checked against the run on its {CHECK_SPLIT} split, which cannot be read here "
            f"({err}); run the export where the run's data is",
            path=saved.run_dir,
        ) from None


def _write(
    saved: Any, scratch: Path, examples: dict[str, list[Any]], quantize: str | None
) -> tuple[dict[str, Any], list[str]]:
    """Every file but the manifest into `scratch`; (export.json, tasks not safe to quantize)."""
    from mtpeft.api import Run
    from mtpeft.export.graph import export_onnx, graph_model, merge_adapter, quantize_int8
    from mtpeft.index.store import run_fingerprint
    from mtpeft.modeling.build import load_saved

    trained = load_saved(saved)
    reference = Run(trained, saved.run_dir)
    answers = {name: TASK_EXPORTS[spec.kind].answer for name, spec in trained.model.tasks.items()}
    expected = {n: agreement.collect(reference, answers[n], n, examples[n]) for n in answers}
    adapter = merge_adapter(trained.model, saved.config.method)  # after the reference answers: in place
    export_onnx(
        graph_model(trained.model),
        trained.backbone.tokenizer,
        scratch / GRAPH_FILE,
        max_positions=reference.max_positions,
    )
    _write_tokenizer(trained.backbone.tokenizer, scratch / TOKENIZER_DIR)
    pair_tasks = [n for n, answer in answers.items() if answer == "pair"]
    if pair_tasks:
        _write_pair_heads(trained.model, pair_tasks, scratch / PAIR_HEADS_FILE)
    if (saved.run_dir / RUN_CALIBRATION_DIR).is_dir():
        shutil.copytree(saved.run_dir / RUN_CALIBRATION_DIR, scratch / CALIBRATION_DIR)
    fingerprint = run_fingerprint(saved.run_dir)
    meta = _meta(saved, reference, adapter, answers, pair_tasks, fingerprint)
    fp32 = _measure(scratch, meta, trained.model.tasks, examples, expected)
    agreement.require_fp32_agreement(fp32)
    meta["agreement"] = {"split": CHECK_SPLIT, "tolerance": agreement.FP32_TOLERANCE, "fp32": fp32}
    unsafe: list[str] = []
    if quantize == "int8":
        quantized = scratch / f"{GRAPH_FILE}.int8"
        quantize_int8(scratch / GRAPH_FILE, quantized)
        os.replace(quantized, scratch / GRAPH_FILE)
        meta["graph"]["precision"] = "int8"
        meta["fingerprint"] = _own_fingerprint(fingerprint, scratch / GRAPH_FILE)
        int8 = _measure(scratch, meta, trained.model.tasks, examples, expected)
        unsafe = agreement.mark_quantization(int8)
        meta["agreement"] |= {"int8": int8, "int8_safe_drop": agreement.INT8_SAFE_DROP}
    (scratch / EXPORT_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return meta, unsafe


def _measure(
    scratch: Path,
    meta: dict[str, Any],
    specs: dict[str, Any],
    examples: dict[str, list[Any]],
    expected: dict[str, agreement.Answers],
) -> dict[str, dict[str, Any]]:
    """The scratch folder's graph answering the check examples, through the torch-free runtime."""
    from mtpeft.export.runtime import ExportedRun

    exported = ExportedRun(ExportFolder(scratch, meta), device="cpu")
    records = {}
    for name, answer in ((n, t["answer"]) for n, t in meta["tasks"].items()):
        got = agreement.collect(exported, answer, name, examples[name])
        records[name] = agreement.compare(specs[name], examples[name], expected[name], got)
    return records


def _meta(
    saved: Any, reference: Any, adapter: str, answers: dict[str, str], pair_tasks: list[str], fingerprint: str
) -> dict[str, Any]:
    import torch

    specs = reference.model.tasks
    calibration = reference.calibration
    return {
        "format": FORMAT,
        "mtpeft_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": {
            "run_dir": str(saved.run_dir.resolve()),
            "run_id": reference.run_id,
            "best_sha256": fingerprint,  # index.store.run_fingerprint: every best/ file's name and sha256
            "model": reference.model_name,
            "method": saved.config.method,
            "adapter": adapter,
        },
        "graph": {
            "file": GRAPH_FILE,
            "precision": "fp32",
            "inputs": ["input_ids", "attention_mask"],
            "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}",
        },
        "tokenizer": {
            "file": f"{TOKENIZER_DIR}/{TOKENIZER_FILE}",
            "pad_token_id": reference.tokenizer.pad_token_id,
        },
        "hidden_size": reference.model_info.hidden_size,
        "max_positions": reference.max_positions,
        "pooling": reference.model.pooling,
        "tasks": {
            name: {
                "kind": info.kind,
                "labels": list(info.labels),
                "base": info.base,
                "description": info.description,
                "metrics": list(specs[name].metrics),
                "max_length": info.max_length,
                "max_query_length": info.max_query_length,
                "answer": answers[name],
                "output": _output(info.kind, name),
            }
            for name, info in reference.tasks.items()
        },
        "pair_heads": PAIR_HEADS_FILE if pair_tasks else None,
        "calibration": None
        if calibration is None
        else {
            "folder": CALIBRATION_DIR,
            "temperatures": calibration.temperatures,  # already applied inside the graph and pair heads
            "ood": reference.ood.describe() if reference.ood is not None else None,
        },
        # What an index built with this export records (ExportedRun.fingerprint): the source run's for fp32
        # (its vectors agree with the run's), replaced by the graph's own when quantized.
        "fingerprint": fingerprint,
    }


def _output(kind: str, name: str) -> str:
    """The graph output a task's answer is read from (pair tasks: the pooled vectors)."""
    rule = TASK_EXPORTS[kind]
    return rule.output(name) if rule.output is not None else POOLED_OUTPUT


def _own_fingerprint(source: str, graph: Path) -> str:
    import hashlib

    digest = hashlib.sha256(f"{source}\0".encode())
    with graph.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _write_tokenizer(tokenizer: Any, folder: Path) -> None:
    """The transformers tokenizer's files, with tokenizer.json's own padding and truncation cleared (the
    runtime pads per batch and truncates per task, as transformers does per call)."""
    from tokenizers import Tokenizer

    tokenizer.save_pretrained(str(folder))
    path = folder / TOKENIZER_FILE
    if not path.is_file():
        raise ConfigError(
            f"the run's tokenizer ({type(tokenizer).__name__}) writes no {TOKENIZER_FILE} (not a fast "
            "tokenizer), so the torch-free runtime could not tokenise as the run does; this model cannot be "
            "exported"
        )
    backend = Tokenizer.from_file(str(path))
    backend.no_padding()
    backend.no_truncation()
    backend.save(str(path))


def _write_pair_heads(model: Any, tasks: list[str], path: Path) -> None:
    """Each pair head's two linear layers and temperature (runtime.PairHead reads them), no pickles."""
    arrays: dict[str, np.ndarray] = {}
    for name in tasks:
        head = model.heads[name]
        first, last = head.mlp[1], head.mlp[4]  # Dropout, Linear, Tanh, Dropout, Linear
        parts = {
            "w1": first.weight,
            "b1": first.bias,
            "w2": last.weight,
            "b2": last.bias,
            "temperature": head.temperature,
        }
        for part, tensor in parts.items():
            arrays[f"{name}/{part}"] = tensor.detach().float().cpu().numpy()
    with path.open("wb") as handle:
        np.savez(handle, **arrays)


# ---- the target folder ----------------------------------------------------------------------------------
def check_target(out: Path, run_dir: Path) -> None:
    """Refuse an --out that writing the export would destroy: a file, the run directory or a folder
    holding it, or a folder that is neither empty nor an earlier export."""
    target = Path(os.path.realpath(out))
    run = Path(os.path.realpath(run_dir))
    if target == run or target in run.parents or run in target.parents:
        raise InputError(f"--out {out}: inside or around the run directory {run_dir}; export beside the run")
    if target.exists() and not target.is_dir():
        raise InputError(f"--out {out} is a file; give a folder for the export")
    if target.is_dir() and any(target.iterdir()) and not is_export(target):
        raise InputError(
            f"--out {out} exists and is not an mtpeft export folder (no {EXPORT_FILE}); not overwriting it. "
            "Choose a new or empty folder, or move that one away yourself"
        )


def _swap_in(scratch: Path, out: Path) -> None:
    """Rename the new folder into place; an earlier export there goes after, file by file (the files
    its manifest lists, then the folders they leave empty), so nothing else in it is ever deleted."""
    if not out.exists():
        scratch.rename(out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    old.rmdir()  # only its unique name is wanted
    out.rename(old)
    try:
        scratch.rename(out)
    except BaseException:
        old.rename(out)  # put the earlier export back
        raise
    _remove_export(old)


def _remove_export(folder: Path) -> None:
    try:
        listed = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        listed = {}
    ours = [folder / name for name in listed] + list(folder.rglob(MANIFEST_FILE))
    for path in ours:
        with contextlib.suppress(OSError):
            path.unlink()
    for path in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            path.rmdir()
    with contextlib.suppress(OSError):  # something not ours arrived meanwhile: keep it, in that folder
        folder.rmdir()


def describe(result: ExportResult) -> list[str]:
    """Lines for the terminal: where, what, and each task's agreement."""
    meta = result.meta
    graph = result.folder / meta["graph"]["file"]
    lines = [
        f"exported {meta['source']['model']} + {meta['source']['method']} ({meta['source']['adapter']}) with "
        f"{len(meta['tasks'])} tasks to {result.folder} in {result.seconds:.0f} s",
        f"graph: {graph.name}, {meta['graph']['precision']}, {graph.stat().st_size / 2**20:.1f} MiB",
    ]
    for precision in ("fp32", "int8"):
        for name, record in meta["agreement"].get(precision, {}).items():
            if not record["examples"]:
                lines.append(f"{precision} {name}: no {CHECK_SPLIT} examples to compare")
                continue
            changes = ", ".join(f"{k} {v:+.4f}" for k, v in record["metric_change"].items())
            lines.append(
                f"{precision} {name}: {record['answers_agree']}/{record['examples']} same "
                f"{record['answer']}, max difference {record['max_difference']:.1e}; {changes}"
            )
    for name in result.unsafe:
        lines.append(
            f"warning: int8 lowers a metric of task '{name}' by more than {agreement.INT8_SAFE_DROP}: "
            "not safe to quantize; export it without --quantize"
        )
    return lines
