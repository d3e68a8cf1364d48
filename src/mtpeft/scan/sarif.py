"""SARIF 2.1.0 output: one run, one rule per task, for code-scanning dashboards and IDE viewers.

- ``ruleId`` is ``mtpeft/`` + the task name lower-cased with anything but ``[a-z0-9._-]`` turned into
  ``-`` (:func:`rule_id`): it depends on the task name only, so it is stable across scans and runs
  (two names with the same slug get a suffix hashed from the name, :func:`rule_ids`). Exact
  duplicates have their own rule, ``mtpeft/exact-duplicate``.
- ``level`` comes from result.Thresholds on the positive-class probability (error >= 0.9,
  warning >= 0.7, note >= 0.5 by default); the probability is in the message and in ``properties``.
- Locations are relative URIs (the path's bytes percent-encoded, :func:`path_uri`) under
  ``uriBaseId`` ``%SRCROOT%`` (the scanned folder, also given as an absolute ``file:`` URI in
  ``originalUriBaseIds``) with 1-based lines and code-point columns (``columnKind:
  unicodeCodePoints``; ``endColumn`` is exclusive, as SARIF defines it).
- ``partialFingerprints["mtpeft/v1"]`` hashes the rule, the path, the qualified name and the
  normalised code (units.normalise_code) of the unit, so an unchanged function keeps its
  fingerprint when lines are inserted above it, and a re-scan does not duplicate its alert.
- Clone pairs are results on the first unit with the second in ``relatedLocations``.
- Skipped files, truncation and scan notes are ``invocations[0].toolExecutionNotifications``.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from typing import Any, TextIO
from urllib.parse import quote

from mtpeft import __version__
from mtpeft.scan.analyzer import PER_UNIT_KINDS, TaskSpec
from mtpeft.scan.clones import ClonePair
from mtpeft.scan.result import Finding, ScanResult, Thresholds, count_phrase
from mtpeft.scan.units import CodeUnit, json_text, normalise_code

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA_URI = (
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
)
SRCROOT = "%SRCROOT%"
FINGERPRINT_KEY = "mtpeft/v1"
EXACT_DUPLICATE_RULE = "mtpeft/exact-duplicate"
NOTIFICATIONS = {
    "mtpeft/skipped-file": "A file was not scanned; the message says why.",
    "mtpeft/truncated": "Units longer than the model's token limit were truncated before analysis.",
    "mtpeft/scan-note": "Something the scan could not do with this run.",
}


def rule_id(task_name: str) -> str:
    slug = re.sub(r"[^a-z0-9._-]+", "-", task_name.lower()).strip("-.")
    return f"mtpeft/{slug or 'task'}"


def rule_ids(task_names: list[str]) -> dict[str, str]:
    """Task name -> rule id; two names with one slug (``Vuln A``, ``vuln-a``) get a stable suffix."""
    used = {EXACT_DUPLICATE_RULE}
    ids = {}
    for name in task_names:
        rid = rule_id(name)
        if rid in used:
            rid = f"{rid}-{hashlib.sha256(name.encode('utf-8')).hexdigest()[:8]}"
        used.add(rid)
        ids[name] = rid
    return ids


def to_sarif(
    result: ScanResult, thresholds: Thresholds | None = None, *, include_root_uri: bool = True
) -> dict[str, Any]:
    """The SARIF log as a dict (json.dump it, or use :func:`write_sarif`)."""
    thresholds = thresholds or Thresholds()
    tasks = [
        t for t in result.tasks.values() if (t.kind in PER_UNIT_KINDS and t.positives) or t.kind == "pair"
    ]
    ids = rule_ids([t.name for t in tasks])
    rules = [_task_rule(t, ids[t.name], thresholds) for t in tasks] + [_exact_rule()]
    index = {rule["id"]: i for i, rule in enumerate(rules)}
    occurrences: Counter[str] = Counter()
    results = [_finding(f, ids[f.task.name], index, occurrences) for f in result.findings(thresholds)]
    clone_rule = ids.get(result.clone_task or "", EXACT_DUPLICATE_RULE)
    results += [_clone(result, p, clone_rule, index, thresholds, occurrences) for p in result.clone_pairs]
    run: dict[str, Any] = {
        "tool": {"driver": _driver(rules)},
        "invocations": [_invocation(result)],
        "columnKind": "unicodeCodePoints",
        "results": results,
        "properties": {
            "maxTokens": result.max_tokens,
            "thresholds": {"error": thresholds.error, "warning": thresholds.warning, "note": thresholds.note}
            | ({"perTask": dict(thresholds.per_task)} if thresholds.per_task else {}),
            "run": dict(result.info),
        },
    }
    if include_root_uri:
        run["originalUriBaseIds"] = {SRCROOT: {"uri": result.root.as_uri().rstrip("/") + "/"}}
    return {"$schema": SARIF_SCHEMA_URI, "version": SARIF_VERSION, "runs": [run]}


def write_sarif(result: ScanResult, out: TextIO, thresholds: Thresholds | None = None) -> None:
    out.write(json_text(to_sarif(result, thresholds)) + "\n")  # file names' bad bytes as \\xNN in texts


# ------------------------------------------------------------------------------------------ rules


def _driver(rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": "mtpeft",
        "version": __version__,
        "semanticVersion": __version__,
        "rules": rules,
        "notifications": [{"id": k, "shortDescription": {"text": v}} for k, v in NOTIFICATIONS.items()],
    }


def _task_rule(task: TaskSpec, rid: str, thresholds: Thresholds) -> dict[str, Any]:
    what = ", ".join(sorted(task.positives)) if task.kind != "pair" else "clone"
    short = f"{task.name}: the model predicts '{what}'"
    full = task.description.strip() or f"Prediction of the fine-tuned task '{task.name}' ({task.kind})."
    levels = (
        f"Level from the model's probability: error >= {thresholds.error}, warning >= {thresholds.warning}, "
        f"note >= {thresholds.note}."
    )
    if task.name in thresholds.per_task:  # `mtpeft scan --precision`: one cut chosen on validation
        cut = thresholds.per_task[task.name]
        levels = f"Error at probability >= {cut:.4f} (chosen for a precision on the run's validation split)."
    help_text = f"{full} {levels} A model's prediction, not a proof: review the code it points at."
    return {
        "id": rid,
        "name": _pascal(task.name),
        "shortDescription": {"text": short},
        "fullDescription": {"text": full},
        "help": {"text": help_text},
        "defaultConfiguration": {"level": "warning"},
        "properties": {
            "task": task.name,
            "kind": task.kind,
            "labels": list(task.labels),
            "tags": [task.kind],
        },
    }


def _exact_rule() -> dict[str, Any]:
    text = "Two functions have the same code (ignoring indentation and blank lines)."
    return {
        "id": EXACT_DUPLICATE_RULE,
        "name": "ExactDuplicate",
        "shortDescription": {"text": "Exact duplicate function"},
        "fullDescription": {"text": text},
        "help": {"text": text + " Consider keeping one copy."},
        "defaultConfiguration": {"level": "note"},
        "properties": {"tags": ["clone"]},
    }


def _pascal(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", name) if part) or "Task"


# ---------------------------------------------------------------------------------------- results


def _finding(finding: Finding, rid: str, index: dict[str, int], occurrences: Counter[str]) -> dict[str, Any]:
    unit, task = finding.unit, finding.task
    positive = finding.answer.label if finding.answer.label in task.positives else sorted(task.positives)[0]
    text = (
        f"{_escape(unit.name)}: {_escape(task.name)} = '{_escape(positive)}' "
        f"with probability {finding.probability:.2f} ({unit.kind}, {finding.level})"
    )
    return {
        "ruleId": rid,
        "ruleIndex": index[rid],
        "level": finding.level,
        "message": {"text": text},
        "locations": [_location(unit)],
        "partialFingerprints": {FINGERPRINT_KEY: _fingerprint(rid, [unit], occurrences)},
        "properties": {
            "task": task.name,
            "probability": round(finding.probability, 6),
            "label": finding.answer.label,
            "labelProbability": round(finding.answer.probability, 6),
            "unitKind": unit.kind,
            "language": unit.language,
        },
    }


def _clone(
    result: ScanResult,
    pair: ClonePair,
    clone_rule: str,
    index: dict[str, int],
    thresholds: Thresholds,
    occurrences: Counter[str],
) -> dict[str, Any]:
    a, b = result.units[pair.a], result.units[pair.b]
    rid = EXACT_DUPLICATE_RULE if pair.exact else clone_rule
    other = f"[{_escape(b.name)}](1) ({_escape(b.path)}:{b.start_line})"
    if pair.exact:
        text = f"{_escape(a.name)} has the same code as {other}"
        props: dict[str, Any] = {"exact": True, "similarity": 1.0}
    else:
        scores = f"similarity {pair.similarity:.2f}, probability {pair.probability or 0:.2f}"
        text = f"{_escape(a.name)} is a clone of {other}: {scores}"
        props = {
            "exact": False,
            "similarity": round(pair.similarity, 6),
            "probability": round(pair.probability or 0, 6),
        }
    related = {"id": 1, **_location(b), "message": {"text": b.name}}
    return {
        "ruleId": rid,
        "ruleIndex": index[rid],
        "level": result.clone_level(pair, thresholds),
        "message": {"text": text},
        "locations": [_location(a)],
        "relatedLocations": [related],
        "partialFingerprints": {
            FINGERPRINT_KEY: _fingerprint(rid, sorted([a, b], key=_identity), occurrences)
        },
        "properties": props,
    }


def _location(unit: CodeUnit) -> dict[str, Any]:
    region = {
        "startLine": unit.start_line,
        "startColumn": unit.start_column,
        "endLine": unit.end_line,
        "endColumn": unit.end_column,
    }
    return {
        "physicalLocation": {"artifactLocation": _artifact(unit.path), "region": region},
        "logicalLocations": [
            {"fullyQualifiedName": unit.name, "kind": "function" if unit.kind == "function" else "member"}
        ],
    }


def _artifact(path: str) -> dict[str, Any]:
    return {"uri": path_uri(path), "uriBaseId": SRCROOT}


def path_uri(path: str) -> str:
    """A relative path as a URI reference: its file-system bytes percent-encoded (RFC 3986).

    From the bytes, not the text: a name that is not UTF-8 (``bad\\xff.py``) becomes ``bad%FF.py``,
    which names that very file, where encoding the text would fail on its surrogate escapes.
    """
    return quote(os.fsencode(path), safe="/")


def _identity(unit: CodeUnit) -> str:
    return f"{unit.path}\0{unit.name}\0{normalise_code(unit.code)}"


def _fingerprint(rid: str, units: list[CodeUnit], occurrences: Counter[str]) -> str:
    """Stable across re-scans while path, name and code are unchanged; unique within one log."""
    # surrogateescape: a path's undecodable bytes are hashed as the bytes they are.
    identity = "\0\0".join([rid, *map(_identity, units)]).encode("utf-8", "surrogateescape")
    base = hashlib.sha256(identity).hexdigest()[:32]
    occurrences[base] += 1  # identical twins in one file (same name, same code) still get distinct prints
    return f"{base}:{occurrences[base]}"


def _escape(text: str) -> str:
    """SARIF message text treats [..](..) as links: literal brackets and backslashes are escaped."""
    return re.sub(r"([\[\]\\])", r"\\\1", text)


# -------------------------------------------------------------------------------- notifications


def _invocation(result: ScanResult) -> dict[str, Any]:
    notes = [_skipped(s.path, s.reason) for s in result.skipped]
    if result.truncated:
        text = f"{count_phrase(len(result.truncated), 'function')} truncated to {result.max_tokens} tokens"
        notes.append({"level": "note", "message": {"text": text}, "descriptor": {"id": "mtpeft/truncated"}})
    notes += [
        {"level": "note", "message": {"text": n}, "descriptor": {"id": "mtpeft/scan-note"}}
        for n in result.notes
    ]
    return {"executionSuccessful": True, "toolExecutionNotifications": notes}


def _skipped(path: str, reason: str) -> dict[str, Any]:
    return {
        "level": "warning",
        "message": {"text": f"skipped {path}: {reason}"},
        "locations": [{"physicalLocation": {"artifactLocation": _artifact(path)}}],
        "descriptor": {"id": "mtpeft/skipped-file"},
    }
