"""Checkpoints in the reference layout: atomic writes, exact-resume RNG state, old-file compatibility.

Layout (a dict, ``torch.save``'d; the reference's keys first):

* ``epoch`` (int, epochs completed), ``lr`` (float, learning rate for the next epoch),
  ``optimizer`` (Adam state_dict: parameters of ``model_pos`` then of ``model_traj``, as the
  reference orders them), ``model_pos`` (the training model's state_dict; the 1f and the
  dilated model share keys), ``model_traj`` (trajectory model's state_dict or None);
* ``random_state`` / ``random_state_semi``: ``numpy.random.RandomState`` objects, as the
  reference's run.py expects there (it shuffles with them when resuming with ``-r``); fastlift
  seeds them from ``--seed`` and the epoch (:func:`reference_random_state`). fastlift's own
  sampler states live under ``fastlift``/``sampler`` and ``sampler_semi``;
* ``fastlift``: everything else needed to resume bit-identically and to rebuild the model:
  ``format``, ``architecture`` (filter widths, channels, causal, dense, joints, keypoint layout),
  torch CPU/CUDA, numpy and Python RNG states (the fused kernels draw their dropout seeds from
  torch's generator), the training history (per-epoch losses) and the flags of the run.

Compatibility (loading is :mod:`fastlift.checkpoint`, shared with ``fastlift export`` and
``fastlift stream``; :func:`load_checkpoint`, :func:`safe_globals_for_reference`,
:func:`fix_state_dict` and :func:`load_model_state` are re-exported here):

* Reference checkpoints load for evaluation and fine-tuning: their ``model_pos`` /
  ``model_traj`` / ``optimizer`` keys are the same. The published files pickle
  ``numpy.random.RandomState`` objects; :func:`load_checkpoint` loads them with
  ``weights_only=True`` inside a :func:`torch.serialization.safe_globals` context that
  allow-lists only numpy's RandomState/MT19937 constructors and plain ``ndarray``/``dtype``/scalar
  reconstruction (under their numpy 1.x and 2.x names) — safe loading is never disabled
  globally. Files needing anything else are refused unless ``trust=True``.
* State dicts without BatchNorm ``num_batches_tracked`` (written by old PyTorch versions) get
  zero counters; a ``module.`` prefix (``nn.DataParallel``) is stripped.
* A fastlift ``model_pos`` is a plain reference state_dict and loads into the reference model.

Writes are atomic: the file is written to a temporary name in the same folder, flushed and
fsynced, then renamed over the target, so a kill never leaves a truncated checkpoint.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from fastlift._files import atomic_output, publish_mode  # noqa: F401  (publish_mode: re-exported)
from fastlift.checkpoint import fix_state_dict, load_checkpoint, load_model_state, safe_globals_for_reference

__all__ = ["save_checkpoint", "load_checkpoint", "safe_globals_for_reference", "fix_state_dict",
           "load_model_state", "rng_state", "set_rng_state", "FORMAT", "checkpoint_path", "publish_mode",
           "reference_random_state"]

FORMAT = 1


def checkpoint_path(directory, name) -> Path:
    """``name`` inside ``directory`` (the reference's convention) unless ``name`` is itself an
    existing path or an absolute one."""
    p = Path(name)
    if p.is_absolute() or (p.exists() and not (Path(directory) / p).exists()):
        return p
    return Path(directory) / p


def reference_random_state(seed: int, epoch: int, semi: bool = False) -> np.random.RandomState:
    """The ``numpy.random.RandomState`` stored under the reference's ``random_state`` keys: seeded
    from ``(seed, epoch, semi)``, so a run.py ``-r`` resume of a fastlift checkpoint shuffles
    reproducibly (run.py's ChunkedGenerator draws its epoch order from it)."""
    return np.random.RandomState([int(seed), int(epoch), int(semi)])


# ----------------------------------------------------------------------------------------- save
def save_checkpoint(path, state: dict) -> Path:
    """``torch.save(state)`` to ``path`` atomically (temp file + fsync + rename). Returns the path."""
    path = Path(path)
    with atomic_output(path, durable=True) as tmp:
        with open(tmp, "wb") as f:
            torch.save(state, f)
    return path


# ----------------------------------------------------------------------------------------- RNG state
def rng_state(device: torch.device | None = None) -> dict:
    """Torch CPU (and ``device``'s accelerator), numpy and Python RNG states as tensors/ints/strings
    (so they load with ``weights_only=True``)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    out = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": str(np_state[0]), "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": int(py_state[0]), "state": torch.tensor(py_state[1], dtype=torch.int64),
                   "gauss": py_state[2]},
        "cuda": None,
    }
    if device is not None and torch.device(device).type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(torch.device(device))
    return out


def set_rng_state(state: dict, device: torch.device | None = None) -> None:
    """Restore :func:`rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
    if device is not None and torch.device(device).type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"].cpu(), torch.device(device))
