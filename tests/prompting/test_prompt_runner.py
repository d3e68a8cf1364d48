"""The prompting runner with a scripted backend: counts, wrong-scoring, resume, store and report."""

from __future__ import annotations

import json
import re

import pytest
from prompt_fakes import FakeBackend, GenerateOnly, config, fixture_task, question, truthful
from typer.testing import CliRunner

from mtpeft.data.fixtures import MARKER
from mtpeft.data.formats.base import load_split
from mtpeft.data.subset import subsample
from mtpeft.errors import ConfigError, MtpeftError
from mtpeft.layout import store_path
from mtpeft.prompting.answers import ANSWERS_FILE, AnswerLog
from mtpeft.prompting.config import load_prompt_config
from mtpeft.prompting.runner import run_dir_for, run_prompting
from mtpeft.store import RunStore
from mtpeft.tasks import get_task


def _only(runs):
    assert len(runs) == 1
    return runs[0]


def test_truthful_answers_score_perfectly_with_intervals_and_costs(tmp_path):
    run = _only(run_prompting(config(tmp_path), backend=FakeBackend(), progress=False))
    details = run.results["vulnerability"]
    assert details["metrics"]["accuracy"] == 1.0 and details["intervals"]["accuracy"] == [1.0, 1.0]
    assert (details["examples"], details["unparseable"], details["unanswered"], details["truncated"]) == (
        16,
        0,
        0,
        0,
    )
    assert details["cost"]["tokens_out"] == 32 and details["cost_per_1000"]["tokens_out"] == 2000
    assert set(run.baselines["vulnerability"]) == {"majority", "tfidf"}


def test_unparseable_answers_are_counted_and_scored_wrong(tmp_path):
    # Positives get an answer naming no label word: each is unparseable and must count as a miss.
    backend = FakeBackend(lambda p: "I am not sure." if MARKER in question(p) else "No.")
    details = _only(run_prompting(config(tmp_path), backend=backend, progress=False)).results["vulnerability"]
    assert details["unparseable"] == 8 and details["examples"] == 16
    assert details["metrics"]["accuracy"] == 0.5 and details["metrics"]["f1"] == 0.0


def test_failed_answers_are_unanswered_kept_and_retried_on_resume(tmp_path):
    failing = FakeBackend(
        lambda p: RuntimeError("HTTP 503 after 4 tries") if MARKER in question(p) else truthful(p)
    )
    cfg = config(tmp_path)
    details = _only(run_prompting(cfg, backend=failing, progress=False)).results["vulnerability"]
    assert details["unanswered"] == 8 and details["examples"] == 16 and details["metrics"]["accuracy"] == 0.5
    logged = AnswerLog(run_dir_for(cfg, "generate") / ANSWERS_FILE).load()
    assert sum(r.error == "HTTP 503 after 4 tries" for r in logged.values()) == 8
    # Failed answers are not final: the same command again asks those, and only those.
    healthy = FakeBackend()
    details = _only(run_prompting(cfg, backend=healthy, progress=False)).results["vulnerability"]
    assert len(healthy.asked) == 8 and details["unanswered"] == 0 and details["metrics"]["accuracy"] == 1.0


def test_a_task_whose_every_request_failed_fails_the_run(tmp_path):
    cfg = config(tmp_path)
    with pytest.raises(MtpeftError, match="all 16 requests failed .*HTTP 500"):
        run_prompting(cfg, backend=FakeBackend(lambda p: RuntimeError("HTTP 500")), progress=False)
    record = RunStore(store_path(cfg.workspace)).list_runs()[0]
    assert record.status == "failed" and "HTTP 500" in record.error


def test_a_stopped_run_resumes_asking_only_the_missing_examples(tmp_path):
    cfg = config(tmp_path)  # batch 1: answers are saved every 4 prompts
    with pytest.raises(KeyboardInterrupt):
        run_prompting(cfg, backend=FakeBackend(stop_after_calls=2), progress=False)
    store = RunStore(store_path(cfg.workspace))
    assert [r.status for r in store.list_runs()] == ["interrupted"]
    assert len(AnswerLog(run_dir_for(cfg, "generate") / ANSWERS_FILE).load()) == 8
    resumed = FakeBackend()
    run = _only(run_prompting(cfg, backend=resumed, progress=False))
    assert len(resumed.asked) == 16 - 8
    assert [r.status for r in store.list_runs()] == ["finished"] and len(store.list_runs()) == 1
    fresh = _only(run_prompting(config(tmp_path / "other"), backend=FakeBackend(), progress=False))
    assert run.results["vulnerability"]["metrics"] == fresh.results["vulnerability"]["metrics"]
    again = FakeBackend()
    assert _only(run_prompting(cfg, backend=again, progress=False)).reused and again.asked == []


def test_a_changed_prompt_is_asked_again_not_scored_with_a_stale_answer(tmp_path):
    cfg = config(tmp_path)
    first = FakeBackend()
    run_prompting(cfg, backend=first, progress=False)
    log = AnswerLog(run_dir_for(cfg, "generate") / ANSWERS_FILE)
    lines = log.path.read_text().splitlines()
    stale = [json.loads(line) | {"sha": "0" * 16} for line in lines[:5]]
    log.path.write_text(
        "\n".join(json.dumps(x) for x in stale) + "\n" + "\n".join(lines[5:]) + '\n{"task": "vul'
    )
    with RunStore(store_path(cfg.workspace))._connect() as db:
        db.execute("UPDATE runs SET status='interrupted'")
    second = FakeBackend()
    run_prompting(cfg, backend=second, progress=False)
    assert len(second.asked) == 5  # the 5 stale ones; the half-written last line was skipped


def test_truncated_prompts_are_counted_and_keep_the_question(tmp_path):
    backend = FakeBackend(context_length=150)  # three questions and their code need ~190 "tokens" (words)
    cfg = config(tmp_path, shots=2, max_new_tokens=4)
    details = _only(run_prompting(cfg, backend=backend, progress=False)).results["vulnerability"]
    assert details["truncated"] == 16
    assert all(backend.count_tokens(p) <= 150 - 4 for p in backend.asked)
    for prompt in backend.asked:  # every code part cut, none emptied, the question whole
        assert question(prompt).endswith(
            "... (truncated)\n```\n\nDoes this function contain a security vulnerability? Answer yes or no."
        )
        assert question(prompt).startswith("Code:\n```\nint handle_")


def test_score_mode_picks_the_most_likely_label_in_either_spelling(tmp_path):
    seen = []

    def likely(prompt, choice):
        seen.append(choice)
        wanted = "yes" if MARKER in question(prompt) else "no"
        return -0.1 if choice == wanted.capitalize() else -5.0  # only the capitalised spelling is likely

    backend = FakeBackend(likely=likely)
    run = _only(run_prompting(config(tmp_path, mode="score"), backend=backend, progress=False))
    assert set(seen) == {"no", "No", "yes", "Yes"}
    assert (
        run.results["vulnerability"]["metrics"]["accuracy"] == 1.0
        and run.results["vulnerability"]["unparseable"] == 0
    )


def test_few_shot_prompts_hold_k_bm25_shots_and_never_the_query(tmp_path):
    backend = FakeBackend()
    run_prompting(config(tmp_path, shots=3), backend=backend, progress=False)
    for prompt in backend.asked:
        assert [m["role"] for m in prompt] == ["system"] + ["user", "assistant"] * 3 + ["user"]
        shot_codes = [m["content"] for m in prompt[1:-1:2]]
        assert question(prompt) not in shot_codes


def test_the_limit_subset_is_the_one_fine_tuned_runs_score(tmp_path):
    task = fixture_task(tmp_path, n=30)
    backend = FakeBackend()
    run_prompting(config(tmp_path, task, limit=7, seed=3), backend=backend, progress=False)
    expected = subsample(load_split(get_task("vulnerability"), task["data"], "test"), 7, seed=3)
    assert len(backend.asked) == 7
    assert all(e.code in question(p) for e, p in zip(expected, backend.asked, strict=True))


def _overlap(prompt, choice: str) -> float:
    """'yes' as likely as the query's words are in the candidate (fixture queries name their method)."""
    text = question(prompt)
    query, code = text.split("\n\nCode:\n")[0].removeprefix("Query: "), text.split("\n\nCode:\n")[1]
    return float(sum(word in code for word in query.split())) if choice.lower() == "yes" else 0.0


def test_code_search_reranks_pools_and_embeds_the_whole_split(tmp_path):
    task = fixture_task(tmp_path, "codesearchnet", n=12)
    backend = FakeBackend(lambda p: "maybe", likely=_overlap)
    cfg = config(tmp_path, task, mode="all", pool_size=4)
    runs = {r.mode: r for r in run_prompting(cfg, backend=backend, progress=False)}
    assert set(runs) == {"generate", "score", "embed"}
    generate = runs["generate"].results["code-search"]
    assert generate["prompts"] == 12 * 4 and generate["examples"] == 12
    assert generate["unparseable"] == 12 * 4 and generate["metrics"]["mrr"] == 0.25  # all wrong: last of 4
    score = runs["score"].results["code-search"]
    assert score["metrics"]["mrr"] > 0.6 and "pool of 4" in score["protocol"]
    embed = runs["embed"].results["code-search"]
    assert "every test code" in embed["protocol"] and embed["metrics"]["mrr"] > 0.5


def test_a_generate_only_backend_runs_generate_and_says_why_score_is_skipped(tmp_path):
    runs = run_prompting(config(tmp_path, mode="both"), backend=GenerateOnly(), progress=False)
    assert [r.mode for r in runs] == ["generate"] and "score mode skipped" in runs[0].notes[0]
    with pytest.raises(ConfigError, match="needs a local model"):
        run_prompting(config(tmp_path, mode="score"), backend=GenerateOnly(), progress=False)


def test_the_store_records_a_prompting_run(tmp_path):
    cfg = config(tmp_path, shots=1, limit=10)
    run_prompting(cfg, backend=FakeBackend(), progress=False)
    record = RunStore(store_path(cfg.workspace)).list_runs()[0]
    assert (record.mode, record.method, record.model, record.status) == (
        "prompting",
        "prompt-generate-1shot",
        "fake",
        "finished",
    )
    assert record.metrics["test"]["vulnerability"]["accuracy"] == 1.0
    assert record.details["shots"] == 1 and record.details["tasks"]["vulnerability"]["examples"] == 10
    assert record.cost["examples"] == 10 and "per_1000_examples" in record.cost
    from mtpeft.report.build import build_report

    markdown = build_report(tmp_path / "ws", tmp_path / "report").markdown.read_text()  # no fine-tuned runs
    row = next(line for line in markdown.splitlines() if "fake (prompted)" in line)
    assert "| vulnerability | accuracy | fake (prompted) | 1-shot, generate | 1.000 [1.000, 1.000] |" in row
    assert "10 (seeded subset)" in row


def test_the_report_shows_prompting_rows_beside_fine_tuned_runs(tmp_path):
    from mtpeft.report.build import build_report
    from mtpeft.study.synthetic import synthetic_spec, synthetic_store

    synthetic_store(synthetic_spec(workspace=tmp_path / "ws", methods=["lora", "full"], seeds=[0]))
    task = RunStore(store_path(tmp_path / "ws")).list_runs()[0].tasks[0]
    spec_task = {"task": "vulnerability", "data": fixture_task(tmp_path)["data"], "name": task}
    run_prompting(config(tmp_path, spec_task, mode="both"), backend=FakeBackend(), progress=False)
    markdown = build_report(tmp_path / "ws", tmp_path / "report").markdown.read_text()
    table = markdown.split("**Fine-tuned, prompted and baselines, per task**")[1].split("\n\n##")[0]
    rows = [line for line in table.splitlines() if line.startswith(f"| {task} |")]
    systems = [row.split(" | ")[2] for row in rows]
    assert "minilm / lora" in systems and "minilm / full" in systems and "tfidf" in systems
    prompted = [row for row in rows if "fake (prompted)" in row]
    assert len(prompted) == 2 and "0-shot, generate" in prompted[0] and "0-shot, score" in prompted[1]
    assert "1.000 [1.000, 1.000]" in prompted[0] and "0 / 0 / 0" in prompted[0] and " s, " in prompted[0]
    assert "Scores per task" in markdown and "fake" not in markdown.split("**Fine-tuned, prompted")[0]
    # A fine-tuned row's cost is its training run's: seconds and estimated FLOPs (synthetic: 2.5e-12 s/FLOP).
    tuned = next(row for row in rows if "minilm / lora" in row and "alone" in row)
    flops = RunStore(store_path(tmp_path / "ws")).list_runs()[0].cost["train_flops_estimate"]
    assert f"{flops:.2e} FLOPs" in tuned and tuned.split(" | ")[-1].startswith("training ")


def test_cli_flag_form_runs_a_local_model(tmp_path):
    from mtpeft.cli.main import app

    data = fixture_task(tmp_path, n=4)["data"]
    args = ["prompt", "--model", "tiny-llama", "--task", f"vulnerability={data}", "--limit", "3"]
    args += ["--mode", "both", "--workspace", str(tmp_path / "ws"), "--max-new-tokens", "3", "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "prompt-generate-0shot" in result.output and "prompt-score-0shot" in result.output
    methods = sorted(r.method for r in RunStore(store_path(tmp_path / "ws")).list_runs())
    assert methods == ["prompt-generate-0shot", "prompt-score-0shot"]


def test_cli_errors_name_the_flag(tmp_path):
    from mtpeft.cli.main import app

    result = CliRunner().invoke(app, ["prompt", "--model", "tiny-llama", "--workspace", str(tmp_path)])
    assert result.exit_code != 0 and "--task NAME=DATA_DIR" in str(result.exception)
    fields = {"model": "openai:", "tasks": [fixture_task(tmp_path)]}
    with pytest.raises(ConfigError, match="needs the server's URL"):
        load_prompt_config(None, fields)
    with pytest.raises(ConfigError, match="unknown answer mode 'guess'") as err:
        load_prompt_config(None, fields | {"model": "tiny-llama", "mode": "generate,guess"})
    assert err.value.field == "mode"


def _fixed(code: str) -> str:
    """The fixture's repair: a wrong comparison or operator back to `<` and `+` (data/fixtures.py)."""
    code = re.sub(r"VAR_1 (<=|==|>) VAR_2", "VAR_1 < VAR_2", code)
    return re.sub(r"return VAR_1 [-*/] ", "return VAR_1 + ", code)


def test_a_generation_task_is_asked_its_instruction_and_scored_on_the_replies(tmp_path):
    repair = fixture_task(tmp_path, "code-refinement")
    code_of = lambda p: question(p).split("```\n", 1)[1].rsplit("\n```", 1)[0]  # noqa: E731
    backend = FakeBackend(lambda p: f"\n{_fixed(code_of(p))}  ")
    runs = run_prompting(config(tmp_path, repair, mode="both"), backend=backend, progress=False)
    # Score mode reads answer words' likelihoods: a repair has none, so only generate runs, and says so.
    assert [r.mode for r in runs] == ["generate"] and "score mode leaves out repair" in runs[0].notes[0]
    asked = question(backend.asked[0])
    assert asked.startswith(get_task("repair").instruction) and "Answer yes or no" not in asked
    details = runs[0].results["repair"]
    assert details["metrics"]["exact_match"] == 1.0 and details["examples"] == 16
    assert set(runs[0].baselines["repair"]) == {"majority", "tfidf", "copy"}
    assert runs[0].baselines["repair"]["copy"]["exact_match"] < 1.0


def test_a_failed_generation_request_scores_as_an_empty_reply_and_is_counted(tmp_path):
    repair = fixture_task(tmp_path, "code-refinement")
    even = re.compile(r"METHOD_\d*[02468] ")  # every second method's request fails
    backend = FakeBackend(lambda p: RuntimeError("HTTP 500") if even.search(question(p)) else "x")
    run = _only(run_prompting(config(tmp_path, repair), backend=backend, progress=False))
    details = run.results["repair"]
    assert 0 < details["unanswered"] < 16 and details["metrics"]["exact_match"] == 0.0


def test_few_shot_generation_answers_each_shot_with_its_reference(tmp_path):
    repair = fixture_task(tmp_path, "code-refinement")
    backend = FakeBackend(lambda p: "x")
    run_prompting(config(tmp_path, repair, shots=2), backend=backend, progress=False)
    turns = backend.asked[0]
    assert [t["role"] for t in turns] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert turns[2]["content"] == _fixed(turns[1]["content"].split("```\n", 1)[1].rsplit("\n```", 1)[0])
