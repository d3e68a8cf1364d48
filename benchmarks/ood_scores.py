"""How well each out-of-distribution score separates a run's own test code from other inputs (AUROC).

For a trained run with OOD statistics (RUN_DIR/calibration/ood.json; `mtpeft calibrate RUN` fits them),
it scores with every score of mtpeft.evaluation.ood.SCORES:

  own test     the code of the run's one-snippet tasks' test split (the in-distribution side)
  random       strings of random tokens from the run's tokenizer, as long as the test snippets
  python       functions of the Python standard library (the scanner's extractor)
  FOLDER       with --other FOLDER (repeat): every function the scanner extracts from it (another
               language, another project)

and prints, per score, the AUROC of own test vs each other set (sklearn's roc_auc_score; 1.0: every
other input scores above every test snippet) and the share of each set beyond the stored threshold.

    .venv/bin/python benchmarks/ood_scores.py RUN_DIR [--other FOLDER ...] [--limit 500] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import random
import sysconfig
from pathlib import Path

import numpy as np


def own_test(run, limit: int) -> list[str]:
    from mtpeft.modeling.task_data import resolve_tasks

    tasks = resolve_tasks(run.config)
    names = [n for n in run.snippet_tasks if n not in run.model.lm_tasks]
    codes = list(
        dict.fromkeys(e.code for n in names for e in tasks[n].examples("test", seed=run.config.seed))
    )
    return random.Random(0).sample(codes, min(limit, len(codes)))


def random_tokens(run, lengths: list[int]) -> list[str]:
    rng = random.Random(1)
    vocab = run.tokenizer.vocab_size
    return [run.tokenizer.decode([rng.randrange(vocab) for _ in range(n)]) for n in lengths]


def extracted(folder: Path, limit: int) -> list[str]:
    from mtpeft.scan.extract import ExtractOptions, extract_tree

    units = extract_tree(folder, ExtractOptions(), progress=False).units
    codes = [u.code for u in units if u.kind in ("function", "method")]
    return random.Random(2).sample(codes, min(limit, len(codes)))


def main() -> None:
    from sklearn.metrics import roc_auc_score

    import mtpeft

    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--other", type=Path, action="append", default=[])
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    run = mtpeft.load(args.run_dir, device="cpu")
    stats = run.ood
    if stats is None:
        raise SystemExit(f"{args.run_dir} has no OOD statistics: run `mtpeft calibrate {args.run_dir}` first")
    test = own_test(run, args.limit)
    sets = {
        "random": random_tokens(run, [min(n, stats.limit) for n in run.count_tokens(test)]),
        "python": extracted(Path(sysconfig.get_paths()["stdlib"]) / "json", args.limit)
        + extracted(Path(sysconfig.get_paths()["stdlib"]) / "email", args.limit),
        **{str(folder): extracted(folder, args.limit) for folder in args.other},
    }
    vectors = {"test": run.ood_vectors(test, stats.limit, stats.task)}
    vectors |= {
        name: run.ood_vectors(codes, stats.limit, stats.task) for name, codes in sets.items() if codes
    }
    results: dict = {"run": str(args.run_dir), "default": stats.score, "counts": {}, "scores": {}}
    results["counts"] = {name: len(v) for name, v in vectors.items()}
    for score in stats.thresholds:  # the scores fitted for this run
        own = stats.scores(vectors["test"], score)
        row = {"test_beyond": float(np.mean(own > stats.thresholds[score]))}
        for name, v in vectors.items():
            if name == "test":
                continue
            other = stats.scores(v, score)
            labels = np.r_[np.zeros(len(own)), np.ones(len(other))]
            row[name] = {
                "auroc": float(roc_auc_score(labels, np.r_[own, other])),
                "beyond": float(np.mean(other > stats.thresholds[score])),
            }
        results["scores"][score] = row
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
