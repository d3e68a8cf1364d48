"""The SQLite results store (one file per workspace)."""

from mtpeft.store.sqlite import RunNotFound, RunRecord, RunStore, config_hash, software_versions

__all__ = ["RunNotFound", "RunRecord", "RunStore", "config_hash", "software_versions"]
