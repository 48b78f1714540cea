"""fastlift: fast, dependable VideoPose3D-class 2D-to-3D human pose lifting.

Public API (imported lazily so ``import fastlift`` stays cheap):

* :class:`TemporalModel`, :class:`TemporalModelOptimized1f` — drop-in fused lifters with the
  reference's constructor and state_dict keys (``fastlift.model``).
* :func:`fuse` — BN-folded inference module (``fastlift.model``).
* :class:`StreamingLifter` — incremental multi-stream inference (``fastlift.streaming``).
* :mod:`fastlift.reference` — the pure-PyTorch oracle; :mod:`fastlift.metrics`,
  :mod:`fastlift.camera`, :mod:`fastlift.skeleton`, :mod:`fastlift.data`.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "TemporalModel": "fastlift.model",
    "TemporalModelOptimized1f": "fastlift.model",
    "FusedInferenceLifter": "fastlift.model",
    "fuse": "fastlift.model",
    "lift_sequence": "fastlift.model",
    "StreamingLifter": "fastlift.streaming",
    "reference": "fastlift.reference",
    "metrics": "fastlift.metrics",
    "camera": "fastlift.camera",
    "skeleton": "fastlift.skeleton",
    "data": "fastlift.data",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'fastlift' has no attribute {name!r}")
    module = importlib.import_module(target)
    value = module if target.endswith("." + name) else getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
