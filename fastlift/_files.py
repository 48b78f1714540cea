"""Atomic file output: every file fastlift writes appears whole or not at all.

Data goes to a temporary file created next to the target (same filesystem), which is renamed
over the target only once it is complete; on any error (or Ctrl-C) the temporary file is removed
and an existing target is left untouched.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

__all__ = ["atomic_output", "atomic_savez", "atomic_write_text", "object_entry", "publish_mode"]


def publish_mode(path) -> None:
    """Give a ``mkstemp`` file (created 0600) the permissions a normal ``open`` would (0666 & ~umask)."""
    mask = os.umask(0)
    os.umask(mask)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o666 & ~mask)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # make the rename itself durable where the OS allows it
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


@contextlib.contextmanager
def atomic_output(path, suffix: str = ".tmp", durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds, move it onto ``path``.

    ``suffix``: the temporary file's extension (writers that pick a format from it, e.g.
    matplotlib animations, need the real one). ``durable``: fsync the file and its folder so the
    data survives a power cut, not just a crash (checkpoints, datasets).
    """
    path = Path(path)
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=directory)
    os.close(fd)
    try:
        yield Path(tmp)
        if durable:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        publish_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        _fsync_dir(directory)


def atomic_savez(path, durable: bool = False, **entries) -> Path:
    """``np.savez_compressed(path, **entries)`` atomically; returns ``path``."""
    path = Path(path)
    with atomic_output(path, durable=durable) as tmp:
        with open(tmp, "wb") as f:  # a file object: savez would append ".npz" to a bare name
            np.savez_compressed(f, **entries)
    return path


def atomic_write_text(path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically; returns ``path``."""
    path = Path(path)
    with atomic_output(path) as tmp:
        tmp.write_text(text)
    return path


def object_entry(value) -> np.ndarray:
    """Wrap a Python object in a 0-d object array (how VideoPose3D's npz files store dicts)."""
    arr = np.empty((), dtype=object)
    arr[()] = value
    return arr
