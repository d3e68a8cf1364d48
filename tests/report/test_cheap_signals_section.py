"""The cheap-signals section on a hand-made study (tests/conftest.py's grouping_study): each signal beside
the measured transfer, its rank correlation with an interval, and the grouping it proposes."""

from __future__ import annotations

from pathlib import Path

from scipy import stats

from mtpeft.catalogue import GROUPING_SIGNALS_TRUST
from mtpeft.report.build import Context, Section, Table, build_report
from mtpeft.report.cheap_signals import TITLE, cheap_signals_section
from mtpeft.store import RunStore
from mtpeft.study.analysis import analyse

A, B, C = "py-defect", "py-clone", "py-search"


def _section(workspace: Path) -> Section | None:
    store = RunStore(workspace / "mtpeft.sqlite")
    return cheap_signals_section(analyse(store.list_runs()), Context(store=store.path, generated="now"))


def _table(section: Section, title_part: str) -> Table:
    (table,) = [b for b in section.blocks if isinstance(b, Table) and title_part in b.title]
    return table


def _rows(table: Table, first: str) -> dict[str, dict[str, str]]:
    return {
        row[0] if first == "signal" else f"{row[0]} | {row[1]}": dict(zip(table.columns, row, strict=True))
        for row in table.rows
    }


def test_each_pairs_signals_sit_beside_its_measured_transfer(grouping_study):
    values = _rows(_table(_section(grouping_study), "beside measured transfer"), "pair")
    assert values[f"{A} | {B}"] == {
        "task a": A,
        "task b": B,
        "lookahead affinity": "+0.02",  # Z[A][B] and Z[B][A], both 0.02
        "gradient cosine": "-0.2",
        "mean transfer": "+0.030",
    }
    assert values[f"{B} | {C}"]["lookahead affinity"] == "-0.01"


def test_rank_correlation_matches_scipy_with_a_bootstrap_interval(grouping_study):
    section = _section(grouping_study)
    rows = _rows(_table(section, "ranks the pairs"), "signal")
    transfer = [0.03, 0.02, -0.02]  # pairs A-B, A-C, B-C
    for name, signal in (
        ("lookahead affinity", [0.02, -0.01, -0.01]),
        ("gradient cosine", [-0.2, 0.3, -0.1]),
    ):
        row = rows[name]
        assert row["pairs"] == "3"
        assert row["Spearman"] == f"{stats.spearmanr(signal, transfer).statistic:+.3f}"
        assert (row["95% interval"], row["note"]) == ("-", "too few pairs for an interval (5 needed)")
    assert GROUPING_SIGNALS_TRUST in section.blocks  # when to trust each signal


def test_each_signals_grouping_is_compared_with_the_measured_one_and_scored(grouping_study):
    rows = _rows(_table(_section(grouping_study), "grouping each signal proposes"), "signal")
    assert rows["measured transfer"]["modules"] == f"{A} + {B}; {C}"
    assert rows["measured transfer"]["score reached"] == "0.687"  # (0.75 + 0.81 + 0.50) / 3
    assert (rows["lookahead affinity"]["same as measured"], rows["lookahead affinity"]["score reached"]) == (
        "yes",
        "0.687",
    )
    cosine = rows["gradient cosine"]
    assert (cosine["modules"], cosine["same as measured"]) == (f"{A} + {C}; {B}", "no")
    assert (cosine["score reached"], cosine["scored"]) == ("0.680", "measured")  # (0.68 + 0.56 + 0.80) / 3


def test_the_section_is_left_out_without_a_cheap_signal(tmp_path):
    from mtpeft.study.synthetic import record_scores

    store = RunStore(tmp_path / "mtpeft.sqlite")
    for scores in ({A: 0.7}, {B: 0.8}, {A: 0.75, B: 0.81}):
        record_scores(store, scores)
    assert _section(tmp_path) is None


def test_the_written_report_holds_the_section(grouping_study, tmp_path):
    files = build_report(grouping_study, tmp_path / "report")
    markdown = files.markdown.read_text(encoding="utf-8")
    assert f"## {TITLE}" in markdown and "how each cheap signal ranks the pairs" in markdown
    assert TITLE in files.html.read_text(encoding="utf-8")
