"""Checkpoints of a run: complete or absent, loaded without running pickled code.

A checkpoint is one ``torch.save`` file holding everything that changes during training
(model, trainer, learning-rate schedule, data order, random number generators, the length
of ``metrics.jsonl``), written atomically: a temporary file in the run directory, flushed
and fsynced, renamed over the old one, then the directory fsynced. The previous checkpoint
is kept as ``checkpoint.prev.pt``, so a garbled newest file falls back to it.

Every value is a tensor, a number, a string or a container of them, so
``torch.load(..., weights_only=True)`` reads it: RNG states are stored as tensors.

Examples:
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = save_checkpoint(d, {"step": 3, "w": torch.ones(2)})
    ...     load_checkpoint(d)["step"]
    3
"""

from __future__ import annotations

import os
import pickle
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ctrlsparse.errors import CtrlsparseError
from ctrlsparse.runs.store import CONFIG

CHECKPOINT, PREVIOUS = "checkpoint.pt", "checkpoint.prev.pt"
SCHEMA_VERSION = 1
"""The layout of a checkpoint; a different version is refused with a message."""


class CheckpointError(CtrlsparseError, ValueError):
    """No usable checkpoint: missing, truncated, garbled or written by another schema."""


class RunDirectoryError(CtrlsparseError, FileExistsError):
    """A run directory that is already in use, without ``--resume`` or ``--overwrite``."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open a directory
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj, path)`` such that ``path`` holds the old content or the new, never a part.

    The temporary file is removed when anything fails (a full disk, an unwritable
    directory), and the error names ``path``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"could not write {path}: {error}") from error
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def save_checkpoint(run_dir: str | Path, state: dict) -> Path:
    """Write ``state`` as the run's newest checkpoint; the one before becomes ``checkpoint.prev.pt``."""
    run_dir = Path(run_dir)
    path = run_dir / CHECKPOINT
    staged = run_dir / f".{CHECKPOINT}.new"
    for stale in run_dir.glob(f".{staged.name}.tmp-*"):  # left by a run killed while writing
        stale.unlink(missing_ok=True)
    atomic_save({"schema": SCHEMA_VERSION, **state}, staged)
    if path.exists():
        os.replace(path, run_dir / PREVIOUS)
    os.replace(staged, path)
    _fsync_dir(run_dir)
    return path


def _safe_globals() -> list:
    """Plain enums that optimizer states hold (nuPI's initialisation kind): data, not code."""
    from cooper.optim.torch_optimizers.nupi_optimizer import nuPIInitType

    return [nuPIInitType]


def _why_unreadable(error: Exception) -> str:
    """What is wrong with the file, in a few words.

    torch's own message advises loading with ``weights_only=False`` or allow-listing the
    offending class: unsafe advice for a file that may not be ours, so it is not repeated.
    """
    text = str(error).strip()
    foreign = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if foreign:
        return f"it holds a {foreign.group(1)} object, which no ctrlsparse checkpoint holds"
    if isinstance(error, pickle.UnpicklingError) or "weights_only" in text:
        return "its bytes are not a torch.save file"
    if isinstance(error, EOFError) or not text:
        return "it is empty or ends early"
    return text.splitlines()[0].split(". ")[0]  # torch's first sentence says what failed


def _read(path: Path) -> dict:
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file: one message naming it
        raise CheckpointError(f"{path} is corrupt: {_why_unreadable(error)}") from None
    if not isinstance(state, dict) or state.get("schema") != SCHEMA_VERSION:
        found = state.get("schema") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{path}: checkpoint schema {found!r}, this ctrlsparse reads schema {SCHEMA_VERSION}"
        )
    return state


def has_checkpoint(run_dir: str | Path) -> bool:
    run_dir = Path(run_dir)
    return any((run_dir / name).exists() for name in (CHECKPOINT, PREVIOUS, f".{CHECKPOINT}.new"))


def load_checkpoint(run_dir: str | Path) -> dict:
    """The newest complete checkpoint of ``run_dir``: ``checkpoint.pt``, else the one before.

    A run killed between the two renames of :func:`save_checkpoint` has its newest checkpoint
    staged under a temporary name; it is complete (it was fsynced before the renames) and used.
    Falling back past a corrupt file warns, naming that file and the one used instead.

    Raises:
        CheckpointError: none exists, or none is readable (the message names each file).

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = save_checkpoint(d, {"step": 1})
        ...     _ = save_checkpoint(d, {"step": 2})
        ...     load_checkpoint(d)["step"]
        2
    """
    run_dir = Path(run_dir)
    candidates = [run_dir / f".{CHECKPOINT}.new", run_dir / CHECKPOINT, run_dir / PREVIOUS]
    problems = []
    for path in candidates:
        if not path.exists():
            continue
        try:
            state = _read(path)
        except CheckpointError as error:
            problems.append(str(error))
            continue
        if problems:
            warnings.warn(f"{'; '.join(problems)}; falling back to {path}", stacklevel=2)
        return state
    if not problems:
        raise CheckpointError(
            f"{run_dir}: no checkpoint to resume from ({CHECKPOINT} is written at every epoch's end "
            "and every checkpoint_every steps); start afresh with --overwrite"
        )
    raise CheckpointError("no usable checkpoint: " + "; ".join(problems))


def check_run_dir(run_dir: str | Path, resume: bool = False, overwrite: bool = False) -> bool:
    """Check, touching nothing, that a run may write ``run_dir``; True when it would resume.

    A directory that does not exist or is empty is used as it is. One that holds a run is
    refused unless ``resume`` (continue from its checkpoint) or ``overwrite`` (delete the
    run's files and start afresh) is given.

    Raises:
        RunDirectoryError: the directory is in use and neither flag was given, or both were.
        CheckpointError: ``resume`` on a directory without a checkpoint.
    """
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise RunDirectoryError("give --resume or --overwrite, not both")
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirectoryError(f"{run_dir} exists and is not a directory")
    in_use = run_dir.is_dir() and any(run_dir.iterdir())
    if resume:
        if not has_checkpoint(run_dir):
            raise CheckpointError(
                f"--resume: {run_dir} has no checkpoint to resume from; start afresh with --overwrite"
            )
        return True
    if not in_use:
        return False
    if not overwrite:
        raise RunDirectoryError(
            f"{run_dir} already holds a run; pass --resume to continue it from its last checkpoint "
            "or --overwrite to start afresh (Python: fit(..., resume=True) or overwrite=True)"
        )
    if not (run_dir / CONFIG).exists() and not has_checkpoint(run_dir):
        raise RunDirectoryError(
            f"--overwrite: {run_dir} is not empty and holds no ctrlsparse run ({CONFIG} or "
            f"{CHECKPOINT}); refusing to delete it"
        )
    return False


def prepare_run_dir(run_dir: str | Path, resume: bool = False, overwrite: bool = False) -> bool:
    """:func:`check_run_dir`, then delete the old run when ``overwrite``; True when resuming."""
    resuming = check_run_dir(run_dir, resume, overwrite)
    run_dir = Path(run_dir)
    if overwrite and run_dir.is_dir() and any(run_dir.iterdir()):
        shutil.rmtree(run_dir)
    return resuming


# Random number generators: stored as tensors so that weights_only loading reads them.


def rng_state() -> dict:
    """The states of torch's (CPU and, when used, CUDA), numpy's and Python's global generators."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {
            "version": version,
            "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },  # fmt: skip
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"].tolist()), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
