"""Code search over a source tree with a trained run: `mtpeft index` builds, `mtpeft search` queries.

    from mtpeft.index import build_index, load_index
    build_index(run, "src/", "my-index/")             # run = mtpeft.load(RUN_DIR)
    run.search("parse a config file", k=10, index="my-index/")

store.py (the on-disk format, loading and ranking) is torch-free; build.py needs the loaded run.
"""

from mtpeft.index.build import IndexBuild, build_index
from mtpeft.index.store import (
    Hit,
    RunRef,
    SearchIndex,
    SearchIndexError,
    load_index,
    read_run_id,
    run_fingerprint,
)

__all__ = [
    "Hit",
    "RunRef",
    "IndexBuild",
    "SearchIndex",
    "SearchIndexError",
    "build_index",
    "load_index",
    "read_run_id",
    "run_fingerprint",
]
