"""Metric registry, point estimates (scikit-learn / sacrebleu) and bootstrap confidence intervals.

Every metric is "higher is better" and lies in [0, 1] (BLEU too, so that averaging the primary metrics of
several tasks for model selection is meaningful). Each metric declares what it consumes:

- "labels":     y_true, y_pred (label indices)
- "ranks":      ranks (1-based rank of the correct candidate per query)
- "texts":      references, hypotheses (strings)

Bootstrap resampling is vectorised: one matrix W[b, i] = how often example i is drawn in resample b, and
each metric is computed from additive per-example statistics (confusion-matrix cells, 1/rank, BLEU n-gram
counts) as W @ stats. The point estimates come from the libraries (CodeXGLUE's two BLEUs from our code,
held to its evaluator scripts' output); tests check both agree.

Text metrics (CodeXGLUE publishes its BLEU scores x 100; these are the same numbers / 100):

- smoothed_bleu:  CodeXGLUE code-to-text's BLEU-4: lower-cased, punctuation split off, one smoothed
                  sentence BLEU per example (+1 on the 2- to 4-gram counts), averaged over examples.
- codexglue_bleu: CodeXGLUE code-refinement's (and code translation's) corpus BLEU-4 over whitespace
                  tokens, +1 on every n-gram count as its evaluator calls it (smooth=True).
- bleu:           sacrebleu's corpus BLEU-4 (13a tokenisation); comparable with MT papers, not CodeXGLUE.
- rouge_l:        ROUGE-L F-measure per example (rouge-score package, its default tokeniser), averaged.
- exact_match:    reference and hypothesis equal up to whitespace (every run of whitespace counts as one
                  space; CodeXGLUE's evaluator only strips the ends, the same on its space-tokenised files).
"""

from __future__ import annotations

import math
import re
import sys
import xml.sax.saxutils
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
from sacrebleu.metrics.bleu import BLEU
from sklearn import metrics as skm

from mtpeft.errors import ConfigError, MtpeftError, NonFiniteMetric

HIGHER = "higher"
POSITIVE = 1  # label index of the positive class (vulnerable, clone, flaky)
CI_LEVEL = 0.95
# sacrebleu corpus BLEU-4, default 13a tokenisation and its default "exp" smoothing (only acts when a
# higher-order n-gram precision is zero); force=True because code is already space-tokenised.
_BLEU = BLEU(smooth_method="exp", force=True)
_BLEU_ORDER = 4


@dataclass(frozen=True)
class Metric:
    name: str
    consumes: str  # "labels" | "ranks" | "texts"
    point: Callable[[dict[str, Any]], float]  # library computation on one set of predictions
    batched: Callable[[np.ndarray, dict[str, Any]], np.ndarray]  # W [B, n] -> one value per resample
    direction: str = HIGHER
    binary_only: bool = False  # positive-class scores: meaningless with more than two classes


INPUTS = {
    "labels": ("y_true", "y_pred"),
    "ranks": ("ranks",),
    "texts": ("references", "hypotheses"),
}


# ---- point estimates ---------------------------------------------------------------------------------
def _sk_binary(fn: Callable[..., float]) -> Callable[[dict[str, Any]], float]:
    return lambda d: float(fn(d["y_true"], d["y_pred"], pos_label=POSITIVE, zero_division=0))


def _reciprocal_ranks(data: dict[str, Any]) -> np.ndarray:
    return 1.0 / np.asarray(data["ranks"], dtype=float)


def _hits_at(k: int) -> Callable[[dict[str, Any]], np.ndarray]:
    return lambda data: (np.asarray(data["ranks"]) <= k).astype(float)


def _mean(per_example: Callable[[dict[str, Any]], np.ndarray]) -> Callable[[dict[str, Any]], float]:
    # Rank metrics are means of per-example values (one line of numpy); scikit-learn's ranking metrics
    # would need the whole score matrix.
    return lambda data: float(np.mean(per_example(data)))


def _normalise_ws(text: str) -> str:
    return " ".join(text.split())


def _bleu(data: dict[str, Any]) -> float:
    return _BLEU.corpus_score(list(data["hypotheses"]), [list(data["references"])]).score / 100.0


# ---- batched (bootstrap) versions, from additive per-example statistics -----------------------------
def _confusions(weights: np.ndarray, data: dict[str, Any]) -> np.ndarray:
    """Confusion matrices C[b, true, pred] of every resample."""
    y_true, y_pred = np.asarray(data["y_true"]), np.asarray(data["y_pred"])
    k = int(max(y_true.max(initial=0), y_pred.max(initial=0), POSITIVE)) + 1
    one_hot = np.zeros((len(y_true), k * k))
    one_hot[np.arange(len(y_true)), y_true * k + y_pred] = 1
    return (weights @ one_hot).reshape(-1, k, k)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den is 0 (scikit-learn's zero_division=0)."""
    return np.divide(num, den, out=np.zeros_like(num, dtype=float), where=den > 0)


def _positive_counts(c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tp = c[:, POSITIVE, POSITIVE]
    return tp, c[:, :, POSITIVE].sum(1) - tp, c[:, POSITIVE, :].sum(1) - tp  # tp, fp, fn


def _b_accuracy(w: np.ndarray, d: dict[str, Any]) -> np.ndarray:
    c = _confusions(w, d)
    return np.trace(c, axis1=1, axis2=2) / c.sum((1, 2))


def _b_precision(w: np.ndarray, d: dict[str, Any]) -> np.ndarray:
    tp, fp, _ = _positive_counts(_confusions(w, d))
    return _ratio(tp, tp + fp)


def _b_recall(w: np.ndarray, d: dict[str, Any]) -> np.ndarray:
    tp, _, fn = _positive_counts(_confusions(w, d))
    return _ratio(tp, tp + fn)


def _b_f1(w: np.ndarray, d: dict[str, Any]) -> np.ndarray:
    tp, fp, fn = _positive_counts(_confusions(w, d))
    return _ratio(2 * tp, 2 * tp + fp + fn)


def _b_macro_f1(w: np.ndarray, d: dict[str, Any]) -> np.ndarray:
    c = _confusions(w, d)
    tp = np.diagonal(c, axis1=1, axis2=2)
    support = c.sum(2) + c.sum(1)  # true + predicted counts; scikit-learn averages over classes seen
    f1 = _ratio(2 * tp, support)
    present = support > 0
    return (f1 * present).sum(1) / present.sum(1)


def _b_mcc(w: np.ndarray, d: dict[str, Any]) -> np.ndarray:
    # The multiclass formula scikit-learn's matthews_corrcoef uses (equals the binary one for 2 classes).
    c = _confusions(w, d)
    t_sum, p_sum = c.sum(2), c.sum(1)
    correct, n = np.trace(c, axis1=1, axis2=2), c.sum((1, 2))
    cov_tp = correct * n - (t_sum * p_sum).sum(1)
    cov_pp = n**2 - (p_sum * p_sum).sum(1)
    cov_tt = n**2 - (t_sum * t_sum).sum(1)
    return _ratio(cov_tp, np.sqrt(cov_tt * cov_pp))


def _b_mean_of(per_example: Callable[[dict[str, Any]], np.ndarray]) -> Callable:
    def batched(w: np.ndarray, d: dict[str, Any]) -> np.ndarray:
        return (w @ per_example(d)) / w.sum(1)

    return batched


def _b_bleu(w: np.ndarray, d: dict[str, Any]) -> np.ndarray:
    # Per-sentence n-gram statistics, the same entry point sacrebleu's own paired bootstrap uses.
    stats = np.asarray(_BLEU._extract_corpus_statistics(list(d["hypotheses"]), [list(d["references"])]))
    sums = w @ stats
    return np.array([_BLEU._compute_score_from_stats(row.tolist()).score / 100.0 for row in sums])


def _exact_matches(d: dict[str, Any]) -> np.ndarray:
    pairs = zip(d["references"], d["hypotheses"], strict=True)
    return np.array([_normalise_ws(r) == _normalise_ws(h) for r, h in pairs], dtype=float)


# ---- CodeXGLUE's two BLEUs ---------------------------------------------------------------------------
# Our own code, written from reading CodeXGLUE's evaluators (github.com/microsoft/CodeXGLUE, MIT licence,
# commit ac74a62802a0dd159b3258c78a2df8ad36cdf2b9): Code-Text/code-to-text/evaluator/evaluator.py (adapted
# there from MOSES' bleu.py) and Code-Code/code-refinement/evaluator/bleu.py (tensorflow/nmt's compute_bleu,
# Apache-2.0). tests/evaluation/codexglue_bleu_cases.json holds what those scripts print on varied pairs;
# the tests hold these functions to them within 1e-6.
_NGRAM_ORDER = 4
# Code-to-text keeps log() finite with the smallest positive normal float added to both counts, so an
# n-gram order with nothing to count (an empty hypothesis) contributes log(1) = 0 instead of log(0/0).
_TINY = sys.float_info.min
_WORDS_AND_MARKS = re.compile(r"\w+|[^\s\w]")  # its splitPuncts: word runs and single other characters
# Its normalize (NIST mteval-v11a rules), applied after splitPuncts has split off every character that
# is neither word nor space (3.14 is already 3 . 14), so most steps find nothing left to do; but "_" is
# a word character there and punctuation here, so get_name ends as get _ name.
_NIST_JOIN = ((re.compile("<skipped>"), ""), (re.compile("-\n"), ""), (re.compile("\n"), " "))
_NIST_SPLIT = (
    # spaced out: !"#$%&()*+/:;<=>?@[\]^_`{|}~ and the space (all ASCII punctuation but ' - . ,)
    (re.compile(r"([{-~\[-`\x20-&(-+:-@/])"), r" \1 "),
    (re.compile(r"([^0-9])([.,])"), r"\1 \2 "),  # a period or comma, unless after a digit ...
    (re.compile(r"([.,])([^0-9])"), r" \1 \2"),  # ... or before one
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),  # a dash after a digit
)


def _ngrams(tokens: Sequence[str]) -> Counter[tuple[str, ...]]:
    """Every n-gram of orders 1 to 4 with its count."""
    return Counter(
        tuple(tokens[i : i + n]) for n in range(1, _NGRAM_ORDER + 1) for i in range(len(tokens) - n + 1)
    )


def _matches_by_order(reference: Sequence[str], hypothesis: Sequence[str]) -> list[int]:
    """Hypothesis n-grams found in the reference, per order, each counted at most as often as there."""
    matches = [0] * _NGRAM_ORDER
    for ngram, count in (_ngrams(hypothesis) & _ngrams(reference)).items():
        matches[len(ngram) - 1] += count
    return matches


def _possible_by_order(hypothesis: Sequence[str]) -> list[int]:
    return [max(len(hypothesis) - n + 1, 0) for n in range(1, _NGRAM_ORDER + 1)]


def code_to_text_tokens(text: str) -> list[str]:
    """Tokens as CodeXGLUE code-to-text scores them: lower-cased, punctuation split off (see _NIST_SPLIT)."""
    text = " ".join(_WORDS_AND_MARKS.findall(text.strip().lower()))
    for pattern, replacement in _NIST_JOIN:
        text = pattern.sub(replacement, text)
    text = xml.sax.saxutils.unescape(text, {"&quot;": '"'})
    text = f" {text} ".lower()
    for pattern, replacement in _NIST_SPLIT:
        text = pattern.sub(replacement, text)
    return text.split()


def smoothed_sentence_bleu(reference: str, hypothesis: str) -> float:
    """CodeXGLUE code-to-text's BLEU-4 of one sentence, in [0, 1] (its files print the mean x 100).

    Lin & Och (2004) smoothing: +1 on matched and possible n-grams of orders 2-4, none on unigrams; brevity
    penalty exp(min(0, 1 - (ref_len + 1) / (hyp_len + 1))), also smoothed. So a hypothesis with no word
    right still scores about 1e-77, and an empty one exp(-ref_len) (both empty: 1).
    """
    ref, hyp = code_to_text_tokens(reference), code_to_text_tokens(hypothesis)
    log_precision = 0.0
    for order, (correct, possible) in enumerate(
        zip(_matches_by_order(ref, hyp), _possible_by_order(hyp), strict=True), start=1
    ):
        plus = 1 if order > 1 else 0
        log_precision += math.log(correct + plus + _TINY) - math.log(possible + plus + _TINY)
    brevity = min(0.0, 1 - (len(ref) + 1) / (len(hyp) + 1))
    return math.exp(log_precision / _NGRAM_ORDER + brevity)


def _smoothed_bleus(d: dict[str, Any]) -> np.ndarray:
    pairs = zip(d["references"], d["hypotheses"], strict=True)
    return np.array([smoothed_sentence_bleu(r, h) for r, h in pairs], dtype=float)


def _refinement_stats(d: dict[str, Any]) -> np.ndarray:
    """Per example: matches of orders 1-4, possible n-grams of orders 1-4, reference and hypothesis length."""
    rows = []
    for reference, hypothesis in zip(d["references"], d["hypotheses"], strict=True):
        ref, hyp = reference.split(), hypothesis.split()  # the evaluator's line.strip().split()
        rows.append([*_matches_by_order(ref, hyp), *_possible_by_order(hyp), len(ref), len(hyp)])
    return np.asarray(rows, dtype=float).reshape(-1, 2 * _NGRAM_ORDER + 2)


def _refinement_bleu_from(stats: np.ndarray) -> np.ndarray:
    """compute_bleu(smooth=True) of each row of summed statistics: +1 on every order, unigrams included."""
    matches, possible = stats[:, :_NGRAM_ORDER], stats[:, _NGRAM_ORDER : 2 * _NGRAM_ORDER]
    ref_len, hyp_len = stats[:, -2], stats[:, -1]
    geo_mean = np.exp(np.log((matches + 1) / (possible + 1)).mean(axis=1))
    # The evaluator divides by zero on a corpus of empty hypotheses (or references); we take the limits:
    # no hypothesis tokens give penalty 0, no reference tokens penalty 1 (it is never shorter).
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = hyp_len / ref_len
        shorter = np.exp(1 - 1 / ratio)
    return geo_mean * np.where(hyp_len >= ref_len, 1.0, shorter)


def _codexglue_bleu(d: dict[str, Any]) -> float:
    return float(_refinement_bleu_from(_refinement_stats(d).sum(axis=0, keepdims=True))[0])


def _b_codexglue_bleu(w: np.ndarray, d: dict[str, Any]) -> np.ndarray:
    return _refinement_bleu_from(w @ _refinement_stats(d))


# ---- ROUGE-L through rouge-score ---------------------------------------------------------------------
@cache
def _rouge_l_scorer() -> Any:
    # Imported on first use: rouge-score pulls in nltk (about 1.5 s), which nothing else needs.
    from rouge_score import rouge_scorer

    # No stemming (the package's and Hugging Face evaluate's default). Its tokeniser lower-cases and keeps
    # only runs of a-z and 0-9, so identifiers split at _ and case changes vanish, and non-ASCII text
    # counts as no tokens at all (ROUGE-L 0 against anything).
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def _rouge_ls(d: dict[str, Any]) -> np.ndarray:
    scorer = _rouge_l_scorer()
    pairs = zip(d["references"], d["hypotheses"], strict=True)
    return np.array([scorer.score(r, h)["rougeL"].fmeasure for r, h in pairs], dtype=float)


def _mcc_point(d: dict[str, Any]) -> float:
    return float(skm.matthews_corrcoef(d["y_true"], d["y_pred"]))


def _macro_f1_point(d: dict[str, Any]) -> float:
    return float(skm.f1_score(d["y_true"], d["y_pred"], average="macro", zero_division=0))


def _accuracy_point(d: dict[str, Any]) -> float:
    return float(skm.accuracy_score(d["y_true"], d["y_pred"]))


def _registry() -> dict[str, Metric]:
    metrics = [
        Metric("accuracy", "labels", _accuracy_point, _b_accuracy),
        Metric("f1", "labels", _sk_binary(skm.f1_score), _b_f1, binary_only=True),
        Metric("precision", "labels", _sk_binary(skm.precision_score), _b_precision, binary_only=True),
        Metric("recall", "labels", _sk_binary(skm.recall_score), _b_recall, binary_only=True),
        Metric("mcc", "labels", _mcc_point, _b_mcc),
        Metric("macro_f1", "labels", _macro_f1_point, _b_macro_f1),
        Metric("mrr", "ranks", _mean(_reciprocal_ranks), _b_mean_of(_reciprocal_ranks)),
        *(Metric(f"recall@{k}", "ranks", _mean(_hits_at(k)), _b_mean_of(_hits_at(k))) for k in (1, 5, 10)),
        Metric("bleu", "texts", _bleu, _b_bleu),
        Metric("smoothed_bleu", "texts", _mean(_smoothed_bleus), _b_mean_of(_smoothed_bleus)),
        Metric("codexglue_bleu", "texts", _codexglue_bleu, _b_codexglue_bleu),
        Metric("rouge_l", "texts", _mean(_rouge_ls), _b_mean_of(_rouge_ls)),
        Metric("exact_match", "texts", _mean(_exact_matches), _b_mean_of(_exact_matches)),
    ]
    return {m.name: m for m in metrics}


METRICS: dict[str, Metric] = _registry()


# ---- public API --------------------------------------------------------------------------------------
def get_metric(name: str) -> Metric:
    if name not in METRICS:
        raise ConfigError(f"unknown metric '{name}'; known metrics: {', '.join(METRICS)}", field="metrics")
    return METRICS[name]


def metric_direction(name: str) -> str:
    return get_metric(name).direction


def _inputs(metric: Metric, data: dict[str, Any]) -> dict[str, Any]:
    needed = INPUTS[metric.consumes]
    missing = [key for key in needed if data.get(key) is None]
    if missing:
        raise MtpeftError(f"metric '{metric.name}' needs {', '.join(needed)}; missing {', '.join(missing)}")
    lengths = {len(data[key]) for key in needed}
    if len(lengths) != 1 or 0 in lengths:
        raise MtpeftError(f"metric '{metric.name}': {', '.join(needed)} must be non-empty, of equal length")
    _check_values(metric, data)
    if metric.binary_only and max(max(data["y_true"]), max(data["y_pred"])) > POSITIVE:
        raise ConfigError(
            f"metric '{metric.name}' scores the positive class of a binary task; use macro_f1",
            field="metrics",
        )
    return {key: data[key] for key in needed}


def _first_bad(values: np.ndarray, ok: np.ndarray) -> str:
    position = int(np.argmin(ok))
    return f"{values[position].item()!r} at position {position}"


def _check_values(metric: Metric, data: dict[str, Any]) -> None:
    """Refuse inputs a metric would turn into inf, NaN or an out-of-range score (a rank 0 gives 1/0)."""
    if metric.consumes == "labels":
        for key in ("y_true", "y_pred"):
            values = np.asarray(data[key])
            whole = np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.bool_)
            ok = values >= 0 if whole else np.zeros(values.shape, dtype=bool)
            if values.ndim != 1 or not ok.all():
                raise MtpeftError(
                    f"metric '{metric.name}': {key} must be label indices (integers >= 0); "
                    f"got {_first_bad(values.ravel(), ok.ravel())}"
                )
    elif metric.consumes == "ranks":
        ranks = np.asarray(data["ranks"], dtype=float)
        ok = np.isfinite(ranks) & (ranks >= 1)
        if ranks.ndim != 1 or not ok.all():
            raise MtpeftError(
                f"metric '{metric.name}': ranks must be finite and >= 1 (rank 1 = correct candidate first); "
                f"got {_first_bad(ranks.ravel(), ok.ravel())} (a rank 0 or NaN comes from NaN scores; "
                "rank them with mtpeft.evaluation.baselines.retrieval_ranks)"
            )


def _finite(name: str, value: float) -> float:
    # Every metric is bounded ([0, 1], MCC [-1, 1]) on valid inputs; this guards the invariant, so an inf
    # or NaN can never be selected as best or recorded as a result.
    if not np.isfinite(value):
        raise NonFiniteMetric(f"metric '{name}' came out as {value}; this is a bug in mtpeft's metrics")
    return value


def compute_metrics(
    names: list[str],
    *,
    y_true: list[int] | None = None,
    y_pred: list[int] | None = None,
    ranks: list[int] | np.ndarray | None = None,
    references: list[str] | None = None,
    hypotheses: list[str] | None = None,
) -> dict[str, float]:
    """Point estimate of each named metric on the given predictions."""
    data = {
        "y_true": y_true,
        "y_pred": y_pred,
        "ranks": ranks,
        "references": references,
        "hypotheses": hypotheses,
    }
    results = {}
    for name in names:
        metric = get_metric(name)
        results[name] = _finite(name, metric.point(_inputs(metric, data)))
    return results


def _resample_weights(n_examples: int, n_resamples: int, seed: int) -> np.ndarray:
    """W[b, i]: how many times example i is drawn (with replacement) in resample b."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_examples, size=(n_resamples, n_examples))
    flat = (draws + np.arange(n_resamples)[:, None] * n_examples).ravel()
    counts = np.bincount(flat, minlength=n_resamples * n_examples)
    return counts.reshape(n_resamples, n_examples).astype(float)


def _percentile_ci(values: np.ndarray) -> tuple[float, float]:
    tail = (1 - CI_LEVEL) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def _n_examples(metric: Metric, data: dict[str, Any]) -> int:
    return len(_inputs(metric, data)[INPUTS[metric.consumes][0]])


def bootstrap_ci(
    names: list[str], per_example: dict[str, Any], *, n: int = 1000, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """95% percentile confidence interval of each metric, resampling examples with replacement."""
    intervals = {}
    weights_by_size: dict[int, np.ndarray] = {}  # same resamples for every metric of the same examples
    for name in names:
        metric = get_metric(name)
        data = _inputs(metric, per_example)
        size = _n_examples(metric, data)
        if size not in weights_by_size:
            weights_by_size[size] = _resample_weights(size, n, seed)
        intervals[name] = _percentile_ci(metric.batched(weights_by_size[size], data))
    return intervals


def paired_bootstrap_diff(
    name: str, a: dict[str, Any], b: dict[str, Any], *, n: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """Difference metric(a) - metric(b) on the full set, and its 95% CI over shared resamples.

    a and b are predictions of two systems on the same examples; each resample draws the same example
    indices for both, so example difficulty cancels out of the interval.
    """
    metric = get_metric(name)
    data_a, data_b = _inputs(metric, a), _inputs(metric, b)
    size = _n_examples(metric, data_a)
    if size != _n_examples(metric, data_b):
        raise MtpeftError(f"paired bootstrap of '{name}': the two systems were scored on different examples")
    weights = _resample_weights(size, n, seed)
    diffs = metric.batched(weights, data_a) - metric.batched(weights, data_b)
    observed = metric.point(data_a) - metric.point(data_b)
    return float(observed), *_percentile_ci(diffs)
