"""The SQLite results store (one file per workspace)."""

from mtpeft.store.sqlite import RunRecord, RunStore, config_hash, software_versions

__all__ = ["RunRecord", "RunStore", "config_hash", "software_versions"]
