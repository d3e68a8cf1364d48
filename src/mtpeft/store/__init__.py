"""The SQLite results store (one file per workspace)."""

from mtpeft.store.sqlite import (
    EvaluationRecord,
    RunNotFound,
    RunRecord,
    RunStore,
    config_hash,
    software_versions,
)

__all__ = ["EvaluationRecord", "RunNotFound", "RunRecord", "RunStore", "config_hash", "software_versions"]
