"""A study's `storage`: where run directories live when runs train on other machines (`executor: ray`).

A shared path or any fsspec URL (`s3://bucket/prefix` through s3fs, `file:///shared/dir`, `gs://`...):
fsspec does the remote file system. Each node trains a run in its own scratch folder and copies the run
directory here (each checkpoint once complete, the results at the end); a run retried on another node
pulls it back and resumes from its last checkpoint. The layout is the workspace's: STORAGE/runs/<run>.

What fsspec does not do, written here: the order of a checkpoint's upload (its manifest last, so a copy cut
short by a dead node is never taken for a complete checkpoint; object stores have no atomic rename).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtpeft import layout
from mtpeft.errors import ConfigError
from mtpeft.manifest import MANIFEST_FILE

SCRATCH_ENV = "MTPEFT_SCRATCH"  # a node's scratch folder (default: the system's temporary folder)
# Test hook: seconds a node waits after copying a checkpoint, so that a test can kill it mid-run.
SYNC_DELAY_ENV = "MTPEFT_SYNC_DELAY_S"


def _filesystem(url: str, options: dict[str, Any]) -> tuple[Any, str]:
    """(fsspec file system, root path in it), with errors that name the field and the fix."""
    import fsspec
    from fsspec.core import split_protocol

    protocol = split_protocol(url)[0] or "file"
    try:
        fsspec.get_filesystem_class(protocol)
    except ValueError:
        raise ConfigError(
            f"storage '{url}': unknown URL scheme '{protocol}://'; give a path every node mounts or an "
            "fsspec URL such as s3://bucket/prefix, gs://bucket/prefix or file:///shared/dir",
            field="storage",
        ) from None
    except ImportError as err:
        raise ConfigError(
            f"storage '{url}' needs a package that is not installed ({err}); install it on the driver and "
            "on every node (for s3://: pip install s3fs, or 'mtpeft[s3]')",
            field="storage",
        ) from None
    try:
        return fsspec.core.url_to_fs(url, **options)
    except TypeError as err:  # an option the file system does not take
        raise ConfigError(f"storage_options for '{url}': {err}", field="storage_options") from None


@dataclass
class Storage:
    """A study's storage location, picklable (a Ray task carries it to its node and opens it there)."""

    url: str
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._fs, self._root = _filesystem(self.url, self.options)

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "options": self.options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.url, self.options = state["url"], state["options"]
        self.__post_init__()

    @property
    def is_local(self) -> bool:
        """Whether the location is a path of this machine (then the store records it as a path)."""
        return "file" in _protocols(self._fs)

    def run_location(self, run_name: str) -> str:
        """Where a run directory is, as the store records it: a path for local storage, else a URL."""
        path = f"{self._root.rstrip('/')}/{layout.RUNS_DIR}/{run_name}"
        return path if self.is_local else self._fs.unstrip_protocol(path)

    def check_reachable(self) -> None:
        """Write and remove a probe file under the root: fails early, before anything trains. (An object
        store has no empty folders to list, so writing is the check that means something.)"""
        probe = f"{self._root.rstrip('/')}/.mtpeft-probe"
        try:
            self._fs.makedirs(self._root, exist_ok=True)
            self._fs.pipe_file(probe, b"")
            self._fs.rm_file(probe)
        except Exception as err:  # any backend's error: credentials, endpoint, permissions
            raise ConfigError(
                f"storage '{self.url}' is not reachable from the driver ({type(err).__name__}: {err}); "
                "check the URL, storage_options and credentials (the nodes need them too)",
                field="storage",
            ) from None

    def _remote(self, run_name: str, *parts: str) -> str:
        return "/".join([self._root.rstrip("/"), layout.RUNS_DIR, run_name, *parts])

    # ---- node side -----------------------------------------------------------------------------
    def pull_run(self, run_name: str, local: Path) -> bool:
        """Copy the run directory from storage into `local` (emptied first); False when there is none."""
        remote = self._remote(run_name)
        self._fs.invalidate_cache()  # fsspec caches listings per process; another node wrote since
        if not self._fs.exists(remote):
            return False
        for path in self._fs.find(remote):
            target = local / Path(path[len(remote) :].lstrip("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            self._fs.get_file(path, str(target))
        return True

    def push_files(self, local: Path, run_name: str, files: list[Path]) -> None:
        for file in files:
            remote = self._remote(run_name, *file.relative_to(local).parts)
            self._fs.makedirs(remote.rsplit("/", 1)[0], exist_ok=True)
            self._fs.put_file(str(file), remote)

    def push_checkpoint(self, local: Path, run_name: str, checkpoint: Path) -> None:
        """A complete checkpoint with what resuming needs beside it (run.json, config, log, best/), its
        manifest last; storage then keeps the same checkpoints as the node (older ones removed)."""
        beside = [local / n for n in (layout.RUN_FILE, layout.CONFIG_FILE, layout.TRAIN_LOG)]
        best = sorted(p for p in (local / layout.BEST_DIR).rglob("*") if p.is_file())
        files = sorted(p for p in checkpoint.rglob("*") if p.is_file() and p.name != MANIFEST_FILE)
        self.push_files(local, run_name, [p for p in beside if p.is_file()] + best + files)
        self.push_files(local, run_name, [checkpoint / MANIFEST_FILE])
        kept = {p.name for p in layout.checkpoint_dirs(local)}
        self._fs.invalidate_cache()
        for remote in self._fs.glob(self._remote(run_name, layout.CHECKPOINTS_DIR, "step-*")):
            if remote.rstrip("/").rsplit("/", 1)[-1] not in kept:
                self._fs.rm(remote, recursive=True)
        delay = float(os.environ.get(SYNC_DELAY_ENV, "0") or 0)
        if delay:
            import time

            time.sleep(delay)

    def push_results(self, local: Path, run_name: str) -> None:
        """The finished run directory, without its checkpoints (only needed to resume), which go."""
        checkpoints = local / layout.CHECKPOINTS_DIR
        files = [p for p in local.rglob("*") if p.is_file() and checkpoints not in p.parents]
        self.push_files(local, run_name, sorted(files))
        remote = self._remote(run_name, layout.CHECKPOINTS_DIR)
        self._fs.invalidate_cache()
        if self._fs.exists(remote):
            self._fs.rm(remote, recursive=True)

    def remove_run(self, run_name: str) -> None:
        """Drop the run directory from storage (a run trained again from step 0)."""
        remote = self._remote(run_name)
        self._fs.invalidate_cache()
        if self._fs.exists(remote):
            self._fs.rm(remote, recursive=True)


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def open_storage(url: str, options: dict[str, Any] | None = None, *, base: Path | None = None) -> Storage:
    """The storage of a study; a plain relative path is taken from `base` (the driver's directory), since
    a node's working directory is not the driver's."""
    from fsspec.core import split_protocol

    if split_protocol(url)[0] is None:
        url = str((base or Path.cwd()) / url) if not Path(url).is_absolute() else url
    return Storage(url, dict(options or {}))


def scratch_dir(node_id: str) -> Path:
    """This node's scratch folder for run directories (one per node, even when nodes share a machine)."""
    root = Path(os.environ.get(SCRATCH_ENV) or Path(tempfile.gettempdir()) / "mtpeft-scratch")
    return root / node_id[:16]
