"""Few-shot examples by BM25 (nearest, never the query itself) and code-search pools and ranks."""

from __future__ import annotations

import numpy as np

from mtpeft.data.example import Example
from mtpeft.prompting.fewshot import ShotPicker, tokens
from mtpeft.prompting.retrieval import cosine_ranks, pool_items, pools, rank_of_true

TRAIN = [
    Example(id="0", code="def read_config(path): return open(path).read()", label=0),
    Example(id="1", code="def parse_json_payload(text): return json.loads(text)", label=1),
    Example(id="2", code="def sort_users(users): return sorted(users)", label=0),
    Example(id="3", code="def parse_json_file(path): return json.load(open(path))", label=1),
    Example(id="4", code="def close_socket(sock): sock.close()", label=0),
]


def test_tokens_split_identifiers_into_lower_case_parts():
    assert tokens("parseHTTPResponse_v2(x)") == ["parse", "http", "response", "v", "2", "x"]


def test_picks_the_bm25_nearest_train_examples_nearest_last():
    query = Example(id="q", code="def parse_json_string(text): return json.loads(text)")
    shots = ShotPicker(TRAIN, "binary").pick(query, 2)
    assert [s.id for s in shots] == ["3", "1"]  # parse_json_payload shares the most words: it comes last


def test_never_picks_the_query_itself_even_when_train_holds_a_copy():
    query = Example(id="other-id", code="def  parse_json_payload(text):\n  return json.loads(text)")
    shots = ShotPicker(TRAIN, "binary").pick(query, 3)
    assert len(shots) == 3 and all(s.id != "1" for s in shots)


def test_k_zero_and_unknown_words_still_give_shots_deterministically():
    picker = ShotPicker(TRAIN, "binary")
    assert picker.pick(TRAIN[0], 0) == []
    unknown = Example(id="z", code="zzz qqq")
    assert [s.id for s in picker.pick(unknown, 2)] == [s.id for s in picker.pick(unknown, 2)]


def test_pair_shots_match_both_snippets_and_exclude_the_same_pair_either_way():
    pairs = [
        Example(id=str(i), code=e.code, code_b=TRAIN[(i + 1) % 5].code, label=i % 2)
        for i, e in enumerate(TRAIN)
    ]
    swapped = Example(id="q", code=pairs[1].code_b or "", code_b=pairs[1].code)
    assert all(s.id != "1" for s in ShotPicker(pairs, "pair").pick(swapped, 4))


def test_code_search_shots_match_the_query_text_and_alternate_yes_and_no():
    train = [
        Example(id=str(i), code=e.code, query=f"query about {e.code.split('(')[0][4:]}")
        for i, e in enumerate(TRAIN)
    ]
    query = Example(id="q", code="hidden answer", query="parse json payload")
    shots = ShotPicker(train, "retrieval").pick(query, 3)
    assert shots[-1].id == "1" and shots[-1].label == 1  # the nearest, a true match, closest to the question
    assert [s.label for s in shots] == [1, 0, 1]
    assert shots[1].code != train[int(shots[1].id)].code  # the mismatch shows another example's code


SEARCH = [
    Example(id=str(i), code=f"def {name}(): pass", query=name.replace("_", " "))
    for i, name in enumerate(["open_file", "close_file", "open_socket", "sort_list", "open_file_twice"])
]


def test_pools_hold_the_true_code_first_then_bm25_neighbours():
    result = pools(SEARCH, 3)
    assert all(pool[0] == i and len(pool) == 3 and len(set(pool)) == 3 for i, pool in enumerate(result))
    assert set(result[0][1:]) <= {1, 2, 4}  # codes sharing 'open' or 'file' with "open file"
    items = pool_items(SEARCH, result[0], 0)
    assert [i.label for i in items] == [1, 0, 0] and items[0].query == "open file"


def test_rank_of_true_counts_ties_against_the_model():
    assert rank_of_true([2.0, 1.0, 0.5]) == 1
    assert rank_of_true([1.0, 1.0, 0.5]) == 2
    assert rank_of_true([float("nan"), 1.0]) == 2


def test_cosine_ranks_over_the_whole_split():
    vectors = np.eye(3)
    assert cosine_ranks(vectors, vectors).tolist() == [1, 1, 1]
    assert cosine_ranks(vectors, vectors[[1, 0, 2]]).tolist() == [3, 3, 1]
