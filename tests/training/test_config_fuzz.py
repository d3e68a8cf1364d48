"""Property-based: whatever the bytes, YAML documents or `--set` strings, the only exception that leaves the
config, study and task loaders is a ConfigError naming the file. (`make fuzz` runs many more examples.)"""

from __future__ import annotations

import copy
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mtpeft.config import TaskEntry, TrainConfig, load_config
from mtpeft.errors import ConfigError
from mtpeft.study.spec import StudySpec, load_study
from mtpeft.tasks.spec import TaskSpec, load_task_yaml

pytestmark = pytest.mark.fuzz

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
LOADERS: dict[str, Callable[[Path], Any]] = {
    "config": load_config,
    "study": load_study,
    "task": load_task_yaml,
}
VALID = {
    "config": EXAMPLES / "train" / "shared-data-multi.yaml",
    "study": EXAMPLES / "studies" / "published-design.yaml",
    "task": EXAMPLES / "tasks" / "my-task.yaml",
}
# Real field names make random documents reach validation, not only "extra field" errors.
FIELDS = sorted(
    {*TrainConfig.model_fields, *TaskEntry.model_fields, *StudySpec.model_fields, *TaskSpec.model_fields}
    | {"models", "methods", "task_sets", "seeds", "options", "overrides", "r", "alpha"}
)
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
VALID_DOCUMENTS = {kind: yaml.safe_load(path.read_text(encoding="utf-8")) for kind, path in VALID.items()}
# Written once per test process: hypothesis runs many examples in one test, and tmp_path is per test.
SCRATCH = Path(tempfile.mkdtemp(prefix="mtpeft-config-fuzz-"))

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**62, max_value=2**80),
    st.floats(),  # nan and +-inf among them
    st.text(max_size=20),
    st.sampled_from(["vulnerability", "lora", "tiny-bert", "x.yaml", "../x", "[/bold]", "", "~", "null"]),
)
extremes = st.sampled_from([math.inf, -math.inf, math.nan, 2**32, -1, 2**63, 0, 1e-300, "inf", "1e400"])
keys = st.one_of(st.sampled_from(FIELDS), st.text(max_size=8), st.integers(-2, 3), st.booleans())
documents = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=5)),
    max_leaves=25,
)
yaml_bits = st.sampled_from(
    list("{}[]:,-&*!|>'\"%@`#?\n\t ") + ["!!python/object:os.system", "!!binary", "&a", "*a", "---", "..."]
)
yaml_text = st.lists(st.one_of(yaml_bits, st.text(max_size=6)), max_size=30).map("".join)


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _write(kind: str, content: bytes) -> Path:
    path = SCRATCH / f"{kind}.yaml"
    path.write_bytes(content)
    return path


def _only_config_errors(kind: str, path: Path, overrides: list[str] | None = None) -> None:
    """Loading gives a ConfigError naming `path`, or a config that is sane to run."""
    try:
        loaded = LOADERS[kind](path) if overrides is None else load_config(path, overrides)
    except ConfigError as err:
        assert err.path == str(path), f"{err!r} does not name {path}"
        return
    _assert_sane(loaded.model_dump(mode="python"))


def _assert_sane(value: Any, where: str = "") -> None:
    """What validation lets through: finite numbers only, seeds that torch and numpy accept."""
    if isinstance(value, dict):
        for key, item in value.items():
            _assert_sane(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _assert_sane(item, f"{where}.{index}")
    elif isinstance(value, float):
        assert math.isfinite(value), f"{where} = {value} was accepted"
    if where.endswith(".seed") or ".seeds." in where:
        assert 0 <= value <= 2**32 - 1, f"{where} = {value} was accepted"


def _dump(document: Any) -> bytes:
    try:
        return _encode(yaml.dump(document, Dumper=DUMPER, allow_unicode=True))
    except yaml.YAMLError:  # e.g. a key PyYAML cannot represent: dump it as text
        return _encode(repr(document))


@pytest.mark.parametrize("kind", sorted(LOADERS))
@given(content=st.one_of(st.binary(max_size=400), yaml_text.map(_encode)))
@example(content=b"\xff\xfe" + "name: x".encode("utf-16-le"))
@example(content=b"a: &a [*a]")
@example(content=b"[" * 3000)
def test_random_bytes_give_only_a_located_config_error(kind, content):
    _only_config_errors(kind, _write(kind, content))


@pytest.mark.parametrize("kind", sorted(LOADERS))
@given(document=st.one_of(st.dictionaries(keys, documents, max_size=8), documents))
def test_random_yaml_documents_give_only_a_located_config_error(kind, document):
    _only_config_errors(kind, _write(kind, _dump(document)))


def _mutations(data: st.DataObject, document: Any, depth: int = 0) -> Any:
    """`document` with random edits: a value replaced, a key dropped or added, a list entry doubled."""
    if isinstance(document, dict) and document and depth < 4:
        key = data.draw(st.sampled_from(sorted(document, key=str)))
        action = data.draw(st.sampled_from(["recurse", "replace", "drop", "add"]))
        if action == "recurse":
            document[key] = _mutations(data, document[key], depth + 1)
        elif action == "replace":
            document[key] = data.draw(documents)
        elif action == "drop":
            del document[key]
        else:
            document[data.draw(keys)] = data.draw(documents)
        return document
    if isinstance(document, list) and document and depth < 4:
        index = data.draw(st.integers(0, len(document) - 1))
        action = data.draw(st.sampled_from(["recurse", "replace", "double"]))
        if action == "recurse":
            document[index] = _mutations(data, document[index], depth + 1)
        elif action == "replace":
            document[index] = data.draw(documents)
        else:
            document.append(copy.deepcopy(document[index]))
        return document
    if isinstance(document, (int, float)) and data.draw(st.booleans()):
        return data.draw(extremes)  # a number next to a number: where a typo or an `.inf` lands
    return data.draw(documents)


@pytest.mark.parametrize("kind", sorted(LOADERS))
@given(data=st.data())
def test_mutated_valid_files_give_only_a_located_config_error(kind, data):
    document = copy.deepcopy(VALID_DOCUMENTS[kind])
    for _ in range(data.draw(st.integers(1, 4))):
        document = _mutations(data, document)
    text = _dump(document)
    if data.draw(st.booleans()):  # and some text-level damage
        at = data.draw(st.integers(0, len(text)))
        text = text[:at] + _encode(data.draw(yaml_text)) + text[at:]
    _only_config_errors(kind, _write(kind, text))


dotted_keys = st.lists(
    st.one_of(st.sampled_from([*FIELDS, "0", "1", "7", "-1", "x", "", " "]), st.text(max_size=5)),
    min_size=1,
    max_size=4,
).map(".".join)
override_values = st.one_of(
    yaml_text,
    documents.map(lambda d: _dump(d).decode("utf-8", "surrogatepass").strip()),
    st.sampled_from([".inf", "-.inf", ".nan", "1e400", "1.0e+400", str(2**32), "-1", "[", "{a: 1", "~", ""]),
)
overrides = st.one_of(st.builds(lambda k, v: f"{k}={v}", dotted_keys, override_values), st.text(max_size=30))


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(items=st.lists(overrides, min_size=1, max_size=3))
@example(items=["lr=.inf"])
@example(items=["lr.x=1"])
@example(items=["tasks.9.batch_size=1"])
@example(items=["name=!!python/object:os.system x"])
def test_random_set_overrides_give_only_a_located_config_error(items):
    config = SCRATCH / "base-train.yaml"
    if not config.exists():
        config.write_bytes(VALID["config"].read_bytes())
    _only_config_errors("config", config, items)


def teardown_module() -> None:
    for path in SCRATCH.iterdir():
        path.unlink()
    os.rmdir(SCRATCH)
