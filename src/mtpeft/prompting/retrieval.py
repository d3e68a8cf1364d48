"""Code search by prompting: candidate pools, the query-candidate items asked about, and ranks.

Two variants, both on the same test queries as fine-tuned runs:

- rerank (generate and score modes): each query's pool is its true code plus the pool_size - 1 other test
  codes nearest to the query by BM25; the model is asked of each candidate "does this code do <query>?"
  and the pool is ranked by its answer (score mode: log P(yes) - log P(no); generate mode: yes above no).
  MRR is over the pool, the protocol of a BM25-then-rerank search with the true code always retrieved, so
  it is an upper bound of that pipeline and NOT the full-set ranking fine-tuned runs are scored on.
- embed: cosine of the LLM's mean-pooled last hidden states, every query against EVERY test code of the
  (subset) split: the protocol fine-tuned retrieval and the TF-IDF baseline use.
"""

from __future__ import annotations

import numpy as np

from mtpeft.data.example import Example
from mtpeft.prompting.fewshot import tokens

POOL_PROTOCOL = "rerank of a pool of {n}: the true code + the {others} BM25-nearest other test codes"
EMBED_PROTOCOL = "cosine of mean-pooled hidden states against every test code of the split"


def pools(test: list[Example], pool_size: int) -> list[list[int]]:
    """Per query i: [i, then the pool_size - 1 BM25-nearest other codes] (codes equal to i's left out)."""
    import bm25s

    index = bm25s.BM25()
    index.index([tokens(e.code) or ["<empty>"] for e in test], show_progress=False)
    flat = [" ".join(e.code.split()) for e in test]
    result = []
    for i, example in enumerate(test):
        words = [w for w in tokens(example.query or "") if w in index.vocab_dict]
        scores = index.get_scores(words) if words else np.zeros(len(test))
        others = [
            int(j) for j in np.argsort(-np.asarray(scores), kind="stable") if j != i and flat[j] != flat[i]
        ]
        result.append([i, *others[: pool_size - 1]])
    return result


def pool_items(test: list[Example], pool: list[int], query_index: int) -> list[Example]:
    """The items asked about for one query: its text with each candidate's code; label 1 = the true one."""
    query = test[query_index]
    return [
        Example(
            id=f"{query.id}/{test[j].id}",
            code=test[j].code,
            query=query.query,
            label=int(j == query_index),
        )
        for j in pool
    ]


def rank_of_true(scores: list[float]) -> int:
    """1-based rank of candidate 0 (the true code); ties count against the model, as everywhere."""
    values = np.asarray(scores, dtype=float)
    values = np.where(np.isnan(values), -np.inf, values)
    return int((values >= values[0]).sum())


def cosine_ranks(queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """1-based rank of code i for query i among all codes, by cosine."""
    from mtpeft.evaluation.baselines import ranks_from_scores

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    return ranks_from_scores(unit(queries) @ unit(codes).T)
