"""Lazy imports of optional dependencies with a clear message when they are missing."""
from __future__ import annotations

import contextlib
import importlib

_HINTS = {
    "matplotlib": "pip install 'fastlift[viz]'  (or: pip install matplotlib)",
    "PIL": "pip install 'fastlift[viz]'  (or: pip install pillow)",
    "nvtx": "pip install 'fastlift[dev]'  (or: pip install nvtx)",
    "triton": "pip install triton  (Linux; the GPU kernels need it, the reference path does not)",
    "tqdm": "pip install tqdm",
}


class MissingDependency(ImportError):
    pass


def require(module: str, feature: str):
    """Import ``module`` or raise :class:`MissingDependency` naming the feature and the fix."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        hint = _HINTS.get(module.split(".")[0], f"pip install {module.split('.')[0]}")
        raise MissingDependency(f"{feature} needs the optional package '{module}', which is not installed: {hint}") from exc


def nvtx_range(name: str):
    """An NVTX range when the ``nvtx`` package is importable, else a no-op context manager."""
    try:
        nvtx = importlib.import_module("nvtx")
    except ImportError:
        return contextlib.nullcontext()
    return nvtx.annotate(name)


def progress(iterable=None, **kwargs):
    """tqdm progress bar (falls back to the plain iterable if tqdm is missing)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a hard dependency, kept for safety
        return iterable
    return tqdm(iterable, **kwargs)
