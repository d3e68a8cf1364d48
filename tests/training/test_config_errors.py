"""Broken configs, task files, study files and `--set` values: one ConfigError naming the file, never a
traceback. Each case here gave a traceback, a wrong value or an unlocated error before."""

from __future__ import annotations

import os
import stat

import pytest
import yaml

from mtpeft.config import TaskEntry, load_config
from mtpeft.errors import ConfigError
from mtpeft.study.spec import load_study
from mtpeft.tasks import get_task, load_task_yaml
from mtpeft.tasks.registry import builtin_tasks

VALID = "name: t\ntasks:\n  - task: vulnerability\n    data: d\nmax_steps: 10\n"


@pytest.fixture
def config_path(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text(VALID, encoding="utf-8")
    return path


def _error(path, overrides=(), **fields) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(path, list(overrides), fields=fields or None)
    assert caught.value.path == str(path), str(caught.value)
    assert str(caught.value).startswith(str(path)), str(caught.value)
    return caught.value


# ---- 1. malformed --set values -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("item", "says"),
    [
        ("name=[", "not valid YAML at line "),
        ("name={a: 1", "not valid YAML"),
        ("name=a: b: c", "not valid YAML"),
        ("name=x\n---\ny", "not valid YAML"),
        ("name=2020-13-45", "not valid YAML: month must be in 1..12"),
    ],
)
def test_override_yaml_syntax_error_names_the_override(config_path, item, says):
    err = _error(config_path, [item])
    assert f"--set {item!r}" in str(err) and says in str(err) and "quote text values" in str(err)
    assert err.field == "name"


@pytest.mark.parametrize(
    "item",
    [
        "name=!!python/object:os.system x",
        "name=!!python/name:os.system",
        "name=!!binary aGVsbG8=",
        "seed=!!int 3",
        "name=&anchor x",
        "method_options=[&a 1, *a]",
    ],
)
def test_override_yaml_tags_anchors_and_aliases_are_refused(config_path, item):
    err = _error(config_path, [item])
    assert "YAML tags (!!...), anchors (&) and aliases (*) are not accepted" in str(err)
    assert f"--set {item!r}" in str(err)


def test_override_into_a_scalar_says_which_field_is_a_scalar(config_path):
    err = _error(config_path, ["max_steps.x=1"])  # max_steps: 10 in the file
    assert "max_steps is a number (10), not a mapping, so it has no field 'x'" in str(err)
    assert err.field == "max_steps.x"
    err = _error(config_path, ["lr.x=1"])  # lr is not in the file: validation blames the override
    assert err.field == "lr" and "(set by --set 'lr.x=1')" in str(err)


@pytest.mark.parametrize(
    ("item", "says"),
    [
        ("tasks.5.batch_size=1", "index 5 is out of range: tasks has entries 0..0"),
        ("tasks.x.batch_size=1", "tasks is a list, so 'x' must be an index 0..0"),
        ("tasks.-1.batch_size=1", "tasks is a list, so '-1' must be an index 0..0"),
        ("tasks.0.x.y=1", None),  # creates tasks.0.x: validation then names the extra field
    ],
)
def test_override_list_index_must_be_in_range(config_path, item, says):
    err = _error(config_path, [item])
    if says:
        assert says in str(err) and f"--set {item!r}" in str(err)
    else:
        assert err.field == "tasks.0.x" and f"(set by --set {item!r})" in str(err)


@pytest.mark.parametrize(
    ("item", "says"),
    [
        ("=1", "the key '' has an empty part"),
        ("a..b=1", "the key 'a..b' has an empty part"),
        (".=1", "has an empty part"),
        ("max_steps", "there is no '='"),
        ("tasks=", "the value is empty (write key=null to unset a field)"),
        ("tasks.0=  ", "the value is empty"),
    ],
)
def test_override_with_empty_key_or_value_says_how_to_write_one(config_path, item, says):
    err = _error(config_path, [item])
    assert says in str(err) and "e.g. --set max_steps=100" in str(err)


def test_typed_cli_flags_are_values_not_yaml(config_path):
    config = load_config(config_path, [], fields={"model": "a: [b", "workspace": "[x]"})
    assert config.model == "a: [b" and config.workspace == "[x]"


# ---- 2. unreadable or malformed files, for all three loaders ------------------------------------------
LOADERS = {"config": load_config, "study": load_study, "task": load_task_yaml}


def _expect_located(loader, path, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        LOADERS[loader](path)
    assert caught.value.path == str(path) and says in str(caught.value), str(caught.value)


def _alias_bomb(levels: int) -> bytes:
    """A few hundred bytes that expand to 10**levels values (each level lists the previous one 10x)."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines).encode() + b"\n"


FILE_CASES = {
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "holds NUL bytes: it is a binary file"),
    "utf16": ("name: t\n".encode("utf-16"), "is UTF-16 text; save the"),
    "utf32": ("name: t\n".encode("utf-32"), "is UTF-32 text"),
    "latin1": ("name: caf\xe9\n".encode("latin-1"), "is not UTF-8 text (byte 0xe9 at line 1)"),
    "empty": (b"", "is empty; it needs a mapping of fields"),
    "comment-only": (b"# nothing here\n", "is empty"),
    "list": (b"- a\n- b\n", "must be a mapping of fields"),
    "scalar": (b"42\n", "must be a mapping of fields"),
    "two-documents": (b"a: 1\n---\nb: 2\n", "not valid YAML"),
    "python-tag": (b"name: !!python/object/apply:os.system [ls]\n", "not valid YAML"),
    "bad-timestamp": (b"name: !!timestamp x\n", "not valid YAML"),
    "date": (b"name: 2024-01-31\n", "a YAML date value"),
    "binary-tag": (b"name: !!binary aGVsbG8=\n", "a YAML bytes value"),
    "set": (b"name: !!set {a}\n", "a YAML set value"),
    "self-reference": (b"name: &a [*a]\n", "too large or too deeply nested (or an alias refers to itself)"),
    "alias-bomb": (_alias_bomb(levels=5), "too large"),
    "deep": (b"name: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nest"),  # libyaml: "maximum nesting depth"
    "huge-int": (b"name: 99999999999999999999999\n", "is out of range"),
}


@pytest.mark.parametrize("loader", sorted(LOADERS))
@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_malformed_file_is_one_located_error(tmp_path, loader, case):
    content, says = FILE_CASES[case]
    path = tmp_path / f"{case}.yaml"
    path.write_bytes(content)
    _expect_located(loader, path, says)


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_folder_fifo_missing_and_nul_paths_are_located_errors(tmp_path, loader):
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    _expect_located(loader, folder, "is a folder; give the path of the")
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)  # opening it would block forever: it must be refused without reading
    _expect_located(loader, fifo, "is not a regular file")
    _expect_located(loader, tmp_path / "missing.yaml", "not found")
    _expect_located(loader, str(tmp_path / "nul\x00.yaml"), "cannot read the")
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (5 * 1024 * 1024))
    _expect_located(loader, big, "too large for a")


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_unreadable_file_is_a_located_error(tmp_path, loader, monkeypatch):
    path = tmp_path / "locked.yaml"
    path.write_text(VALID, encoding="utf-8")
    if os.geteuid() != 0:  # root reads anything: there, stand in for the kernel's refusal
        path.chmod(0)
    else:
        from pathlib import Path

        def refuse(self):
            raise PermissionError(13, "Permission denied", str(self))

        monkeypatch.setattr(Path, "read_bytes", refuse)
    try:
        _expect_located(loader, path, "cannot read the")
        assert "Permission denied" in _message(loader, path)
    finally:
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)


def _message(loader, path) -> str:
    try:
        LOADERS[loader](path)
    except ConfigError as err:
        return str(err)
    raise AssertionError("no error")


def test_utf8_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + VALID.encode())
    assert load_config(path).name == "t"


# ---- 3. seeds, non-finite numbers, task names ---------------------------------------------------------
@pytest.mark.parametrize("seed", ["-1", str(2**32), str(2**70)])
def test_seed_out_of_range_is_refused(config_path, seed):
    err = _error(config_path, [f"seed={seed}"])
    assert err.field == "seed"


def test_seed_range_ends_are_accepted(config_path):
    assert load_config(config_path, [f"seed={2**32 - 1}"]).seed == 2**32 - 1
    assert load_config(config_path, ["seed=0"]).seed == 0


def test_study_seeds_have_the_same_range(tmp_path):
    path = tmp_path / "study.yaml"
    study = {
        "name": "s",
        "tasks": [{"task": "vulnerability", "data": "d"}],
        "grid": {"methods": ["lora"], "seeds": [0, 2**32]},
    }
    path.write_text(yaml.safe_dump(study))
    with pytest.raises(ConfigError, match=r"field 'grid.seeds.1'"):
        load_study(path)


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ("lr=.inf", "lr"),
        ("lr=-.inf", "lr"),
        ("lr=.nan", "lr"),
        ("temperature=.NaN", "temperature"),
        ("head_lr=1.0e400", "head_lr"),
        ("method_options.r=.inf", "method_options.r"),
        ("method_options.dropout=[0.1, .nan]", "method_options.dropout.1"),
        ("tasks.0.batch_size=.inf", "tasks.0.batch_size"),
    ],
)
def test_non_finite_numbers_are_refused_anywhere_with_the_field(config_path, item, field):
    err = _error(config_path, [item])
    assert err.field == field and "finite number" in str(err)


def test_non_finite_numbers_in_files_are_refused(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text(VALID + "lr: .inf\n")
    with pytest.raises(ConfigError, match=r"train.yaml, field 'lr': must be a finite number, got inf"):
        load_config(path)
    study = tmp_path / "study.yaml"
    study.write_text("name: s\nbase: {lr: .nan}\ntasks: [{task: vulnerability}]\ngrid: {methods: [lora]}\n")
    with pytest.raises(ConfigError, match=r"study.yaml, field 'base.lr': must be a finite number"):
        load_study(study)


@pytest.mark.parametrize(
    "name",
    ["spec", "registry", "__init__", "builtin_tasks", "os.path", "../x", "a.b", "/etc/passwd", "x\x00"],
)
def test_task_names_are_looked_up_only_among_built_ins(name):
    with pytest.raises(ConfigError, match="unknown task") as caught:
        get_task(name)
    assert "built-in tasks: " in str(caught.value)


def test_a_file_named_like_a_task_is_not_read_instead_of_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "vulnerability").write_text("name: impostor\n")
    assert get_task("vulnerability") is builtin_tasks()["vulnerability"]
    (tmp_path / "notes.txt").write_text("name: x\n")
    with pytest.raises(ConfigError, match="'notes.txt' exists but a task file must end in .yaml or .yml"):
        get_task("notes.txt")


def test_a_task_yaml_is_labelled_by_its_name_not_its_file_name(tmp_path):
    task = tmp_path / "my-task.yaml"
    task.write_text("name: sql-injection\nkind: binary\nformat: jsonl\nlabels: [safe, bad]\nmetrics: [f1]\n")
    assert TaskEntry(task=str(task)).label == "sql-injection"
    assert TaskEntry(task=str(task), name="a.b").label == "a.b"
    assert TaskEntry(task=str(tmp_path / "gone.yaml")).label == "gone"  # loading it will say why


def test_task_names_that_would_share_files_are_refused(config_path):
    err = _error(config_path, ["tasks=[{task: vulnerability, name: Vuln}, {task: flaky, name: vuln}]"])
    assert "task names 'Vuln' and 'vuln' would share prediction files" in str(err)


# ---- 4. errors name the config file ------------------------------------------------------------------
def test_override_errors_name_the_config_file_not_a_placeholder(config_path):
    for item in ("tasks.5.batch_size=1", "tasks.x.batch_size=1", "=1", "name=["):
        assert "<config>" not in str(_error(config_path, [item]))
