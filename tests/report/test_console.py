"""The console tables the demo and `mtpeft train` print."""

from __future__ import annotations

from rich.console import Console

from mtpeft.report.console import cost_table

COST = {
    "shared_params": 221_184,
    "head_params": 400_000,
    "trainable_params": 621_184,
    "stored_bytes": 2_500_000,
    "tokens": 443_277,
    "train_flops_estimate": 5.1e13,
    "wall_time_s": 200.0,
    "tokens_per_s": 2216.0,
}


def _render(table) -> str:
    console = Console(width=80, record=True)
    console.print(table)
    return console.export_text()


def test_cost_table_shows_single_over_multi_ratios_within_80_columns():
    multi = COST | {"shared_params": 73_728, "trainable_params": 473_728, "wall_time_s": 100.0}
    text = _render(cost_table({"single (3 runs)": COST, "multi (1 run)": multi}, num_tasks=3))
    assert max(len(line) for line in text.splitlines()) <= 80
    shared_row = next(line for line in text.splitlines() if "shared-module params" in line)
    assert "221,184" in shared_row and "73,728" in shared_row and "3.00x" in shared_row
    wall_row = next(line for line in text.splitlines() if "wall time" in line)
    assert "2.00x" in wall_row


def test_cost_table_with_one_setting_has_no_ratio_column():
    text = _render(cost_table({"multi": COST}, num_tasks=2))
    assert "ratio" not in text and "x │" not in text
    assert "221,184" in text


def test_scores_table_shows_the_copy_baseline_only_where_a_task_has_it():
    from rich.console import Console

    from mtpeft.report.console import scores_table

    def render(rows):
        console = Console(width=200, record=True)
        console.print(scores_table("scores", rows, ["model"]))
        return console.export_text()

    classification = ("vuln", "accuracy", {"model": 0.7}, {"majority": {"accuracy": 0.5}})
    repair = ("repair", "codexglue_bleu", {"model": 0.81}, {"copy": {"codexglue_bleu": 0.7793}})
    assert "copy" not in render([classification])
    with_copy = render([classification, repair])
    assert "copy" in with_copy and "0.779" in with_copy
