"""Study YAML -> runs: how many, which groups, which settings, and clear errors for bad studies."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mtpeft.errors import ConfigError
from mtpeft.study.grid import expand
from mtpeft.study.spec import load_study, parse_study

REPO = Path(__file__).resolve().parents[2]
TASKS = [{"task": t, "data": f"{{workspace}}/data/{t}"} for t in ("py-defect", "py-clone", "py-search")]


def _study(**grid) -> dict:
    return {
        "name": "grid-test",
        "workspace": "ws",
        "base": {"max_steps": 10, "lr": 0.001},
        "tasks": TASKS,
        "grid": {"methods": ["lora"], **grid},
    }


@pytest.mark.parametrize(
    ("task_sets", "runs_per_arm_seed"),
    [(["single"], 3), (["all"], 1), (["pairs"], 3), (["single", "all", "pairs"], 7)],
)
def test_grid_size_is_task_groups_times_seeds_times_methods(task_sets, runs_per_arm_seed):
    spec = parse_study(_study(task_sets=task_sets, seeds=[0, 1], methods=["lora", "adapter", "full"]))
    assert len(expand(spec)) == runs_per_arm_seed * 2 * 3


def test_single_runs_are_single_mode_one_task_and_groups_are_multi_mode():
    runs = expand(parse_study(_study(task_sets=["single", "all", "pairs"])))
    single = [r for r in runs if r.task_set == "single"]
    assert [r.group for r in single] == [("py-defect",), ("py-clone",), ("py-search",)]
    assert all(r.config.mode == "single" and len(r.config.tasks) == 1 for r in single)
    pairs = [r.group for r in runs if r.task_set == "pair"]
    assert pairs == [("py-defect", "py-clone"), ("py-defect", "py-search"), ("py-clone", "py-search")]
    assert all(r.config.mode == "multi" and r.config.study == "grid-test" for r in runs if len(r.group) > 1)
    assert single[0].display_name == "grid-test-minilm-lora-s0-py-defect"


def test_explicit_groups_keep_study_task_order_and_duplicates_run_once():
    spec = parse_study(
        _study(task_sets=["all", [["py-search", "py-defect"], ["py-defect", "py-clone", "py-search"]]])
    )
    runs = expand(spec)
    # The second explicit group is the `all` run again: one run, not two.
    assert [r.group for r in runs] == [("py-defect", "py-clone", "py-search"), ("py-defect", "py-search")]


def test_base_fields_and_method_options_reach_every_config():
    data = _study(
        methods=[{"name": "lora", "options": {"r": 4}}, {"name": "full", "overrides": {"lr": 5e-5}}],
        task_sets=["all"],
    )
    lora, full = expand(parse_study(data))
    assert lora.config.method_options == {"r": 4} and lora.config.lr == 0.001 and lora.config.max_steps == 10
    assert full.config.method == "full" and full.config.lr == 5e-5


def test_task_overrides_change_every_task_of_that_methods_runs_only():
    data = _study(
        methods=[
            {"name": "lora"},
            {"name": "lora", "label": "lora-512", "task_overrides": {"max_length": 512}},
        ],
        task_sets=["all"],
    )
    short, long = expand(parse_study(data))
    assert [t.max_length for t in short.config.tasks] == [256, 256, 256]
    assert [t.max_length for t in long.config.tasks] == [512, 512, 512]
    assert long.display_name == "grid-test-minilm-lora-512-s0-all" and long.key != short.key


def test_task_overrides_cannot_rename_a_task():
    data = _study(methods=[{"name": "lora", "task_overrides": {"data": "elsewhere"}}])
    with pytest.raises(ConfigError, match="set them in the study's `tasks`"):
        parse_study(data)


def test_a_bad_task_override_is_located_at_the_method_not_the_base():
    data = _study(methods=[{"name": "lora", "task_overrides": {"max_length": "huge"}}])
    with pytest.raises(ConfigError) as err:
        expand(parse_study(data))
    assert err.value.field == "methods[lora].task_overrides.max_length"


def test_workspace_override_moves_the_data_placeholder():
    spec = parse_study(_study(task_sets=["single"])).with_workspace("/elsewhere")
    run = expand(spec)[0]
    assert run.config.workspace == "/elsewhere"
    assert run.config.tasks[0].data == "/elsewhere/data/py-defect"


def test_run_key_matches_the_trainers_key_and_run_directory():
    from mtpeft.layout import run_configs, run_dir_for

    for run in expand(parse_study(_study(task_sets=["single", "all"]))):
        (trained,) = run_configs(run.config)  # every study run is one training run
        assert run.key == trained.run_key()
        assert run_dir_for(trained).name.endswith(run.key[:10])  # where a resume looks for checkpoints


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"base": {"seed": 3}}, "base", "set by the study"),
        (
            {"grid": {"methods": ["lora"], "task_sets": [[["py-defect", "nope"]]]}},
            None,
            "unknown tasks ['nope']",
        ),
        ({"grid": {"methods": ["lora", "lora"]}}, "grid", "distinct `label:`"),
        (
            {"grid": {"methods": ["lora"], "task_sets": ["triples"]}},
            "grid.task_sets",
            "unknown task set 'triples'",
        ),
    ],
)
def test_bad_studies_name_the_field(change, field, words):
    with pytest.raises(ConfigError) as err:
        parse_study(_study() | change)
    if field:
        assert field in str(err.value)
    if words:
        assert words in str(err.value)


def test_several_grids_add_their_runs_and_errors_name_the_grid():
    grids = [
        {"models": ["minilm"], "methods": ["lora", "full"], "task_sets": ["single", "all"], "seeds": [0, 1]},
        {"models": ["smollm2-135m"], "methods": ["lora"], "task_sets": ["all"]},
    ]
    study = _study() | {"grids": grids}
    study.pop("grid")
    runs = expand(parse_study(study))
    assert len(runs) == 2 * 2 * (3 + 1) + 1
    assert {(r.config.model, r.method_label) for r in runs} == {
        ("minilm", "lora"),
        ("minilm", "full"),
        ("smollm2-135m", "lora"),
    }
    with pytest.raises(ConfigError, match="not both"):
        parse_study(study | {"grid": {"methods": ["lora"]}})
    grids[1]["task_sets"] = ["triples"]
    with pytest.raises(ConfigError, match="grids.1.task_sets"):
        parse_study(study)


def test_bad_base_value_is_reported_as_a_train_config_problem():
    with pytest.raises(ConfigError, match="max_steps"):
        expand(parse_study(_study() | {"base": {"max_steps": 0}}))


def test_the_claims_study_is_its_stated_design():
    runs = expand(load_study(REPO / "examples" / "studies" / "claims.yaml"))
    arms = {(r.config.model, r.method_label) for r in runs}
    assert arms >= {("minilm", "lora"), ("minilm", "full"), ("smollm2-135m", "lora")}
    # The budget curve at 256 and 512 tokens besides the base 128: all-task LoRA runs with longer inputs.
    all_lora = [r for r in runs if r.task_set == "all" and r.config.method == "lora"]
    lengths = {r.config.tasks[0].max_length for r in all_lora}
    assert lengths == {128, 256, 512}
    minilm_seeds = {r.config.seed for r in runs if r.config.model == "minilm"}
    assert len(minilm_seeds) >= 2 and any(r.task_set == "pair" for r in runs)
    assert all(r.config.curve_test for r in runs if r.task_set == "all")


@pytest.mark.parametrize("name", ["default-benchmark.yaml", "published-design.yaml"])
def test_shipped_example_studies_load_and_expand(name):
    path = REPO / "examples" / "studies" / name
    spec = load_study(path)
    runs = expand(spec)
    raw = yaml.safe_load(path.read_text())
    n_tasks = len(raw["tasks"])
    per_arm_seed = n_tasks + 1 + n_tasks * (n_tasks - 1) // 2
    assert len(runs) == per_arm_seed * len(raw["grid"]["methods"]) * len(raw["grid"]["seeds"])


def test_the_grouping_study_is_its_stated_design():
    runs = expand(load_study(REPO / "examples" / "studies" / "grouping.yaml"))
    kinds = [r.task_set for r in runs]
    assert (kinds.count("single"), kinds.count("pair"), kinds.count("all")) == (5, 10, 1)  # every pair once
    measured = [r for r in runs if r.config.affinity is not None]
    assert [r.task_set for r in measured] == ["all"]  # the one joint run measures the lookahead affinity
    assert {e.data for e in measured[0].config.tasks} == {
        f"../shared/data/{d}"
        for d in ("devign-sysevr", "reveal-chrome", "bigclonebench", "tlcodesum", "flakeflagger")
    }
    assert all(e.max_length == 128 and e.max_train_examples for r in runs for e in r.config.tasks)
    # Affinity is no part of the run key: the joint run is found again however it was trained.
    assert measured[0].config.run_key() == measured[0].config.model_copy(update={"affinity": None}).run_key()
