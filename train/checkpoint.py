"""Checkpoints in the reference layout: atomic writes, safe loading, old-file compatibility.

Layout (a dict, ``torch.save``'d; the reference's keys first):

* ``epoch`` (int, epochs completed), ``lr`` (float, learning rate for the next epoch),
  ``optimizer`` (Adam state_dict: parameters of ``model_pos`` then of ``model_traj``, as the
  reference orders them), ``model_pos`` (the training model's state_dict; the 1f and the
  dilated model share keys), ``model_traj`` (trajectory model's state_dict or None);
* ``random_state`` / ``random_state_semi``: the samplers' RNG states (the reference stores
  ``numpy.random.RandomState`` objects here; fastlift stores its samplers' states as a dict of
  tensors and ints, so its files load with ``torch.load(weights_only=True)`` and no allow-list);
* ``fastlift``: everything else needed to resume bit-identically and to rebuild the model:
  ``format``, ``architecture`` (filter widths, channels, causal, dense, joints, keypoint layout),
  torch CPU/CUDA, numpy and Python RNG states (the fused kernels draw their dropout seeds from
  torch's generator), the training history (per-epoch losses) and the flags of the run.

Compatibility:

* Reference checkpoints load for evaluation and fine-tuning: their ``model_pos`` /
  ``model_traj`` / ``optimizer`` keys are the same. The published files pickle
  ``numpy.random.RandomState`` objects; :func:`load_checkpoint` loads them with
  ``weights_only=True`` inside a :func:`torch.serialization.safe_globals` context that
  allow-lists only numpy's RandomState/MT19937 constructors and plain ``ndarray``/``dtype``
  reconstruction (under their numpy 1.x and 2.x names) — safe loading is never disabled
  globally. Files needing anything else are refused unless ``trust=True``.
* State dicts without BatchNorm ``num_batches_tracked`` (written by old PyTorch versions) get
  zero counters; a ``module.`` prefix (``nn.DataParallel``) is stripped.
* A fastlift ``model_pos`` is a plain reference state_dict and loads into the reference model.

Writes are atomic: the file is written to a temporary name in the same folder, flushed and
fsynced, then renamed over the target, so a kill never leaves a truncated checkpoint.
"""
from __future__ import annotations

import contextlib
import os
import pickle
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

__all__ = ["save_checkpoint", "load_checkpoint", "safe_globals_for_reference", "fix_state_dict",
           "load_model_state", "rng_state", "set_rng_state", "FORMAT", "checkpoint_path", "publish_mode"]

FORMAT = 1


def checkpoint_path(directory, name) -> Path:
    """``name`` inside ``directory`` (the reference's convention) unless ``name`` is itself an
    existing path or an absolute one."""
    p = Path(name)
    if p.is_absolute() or (p.exists() and not (Path(directory) / p).exists()):
        return p
    return Path(directory) / p


# ----------------------------------------------------------------------------------------- save
def publish_mode(path) -> None:
    """Give a ``mkstemp`` file (created 0600) the permissions a normal ``open`` would (0666 & ~umask)."""
    mask = os.umask(0)
    os.umask(mask)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o666 & ~mask)


def save_checkpoint(path, state: dict) -> Path:
    """``torch.save(state)`` to ``path`` atomically (temp file + fsync + rename). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        publish_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable where the OS allows it
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    return path


# ----------------------------------------------------------------------------------------- load
def safe_globals_for_reference() -> list:
    """The allow-list that lets ``weights_only=True`` read the reference's numpy RNG pickles.

    Only constructors of numpy's legacy ``RandomState``/``MT19937`` bit generator and plain
    ``ndarray``/``dtype`` reconstruction, under both the numpy 1.x (``numpy.core``) and 2.x
    (``numpy._core``) module names, and the pre-1.17 ``numpy.random.__RandomState_ctor``.
    """
    import numpy.random._pickle as rpickle

    try:
        import numpy._core.multiarray as multiarray
    except ImportError:  # numpy < 2
        import numpy.core.multiarray as multiarray
    reconstruct = multiarray._reconstruct
    out = [np.random.mtrand.RandomState, np.random.MT19937, np.ndarray, np.dtype,
           (reconstruct, "numpy.core.multiarray._reconstruct"),
           (reconstruct, "numpy._core.multiarray._reconstruct")]
    for name in ("__randomstate_ctor", "__bit_generator_ctor"):
        if hasattr(rpickle, name):
            out.append(getattr(rpickle, name))
    legacy = getattr(np.random, "__RandomState_ctor", None)
    if legacy is not None:
        out.append((legacy, "numpy.random.__RandomState_ctor"))
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for name in ("UInt32DType", "Int64DType", "Float64DType", "Float32DType"):
            if hasattr(dtypes, name):
                out.append(getattr(dtypes, name))
    return out


def load_checkpoint(path, map_location="cpu", trust: bool = False) -> dict:
    """Load a reference or fastlift checkpoint without executing arbitrary pickled code.

    Args:
        path: the checkpoint file.
        map_location: where tensors go (default CPU).
        trust: fall back to full unpickling (``weights_only=False``) for files that need more
            than the allow-list — only for files from a trusted source.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a checkpoint, not a dict, or needs globals outside the allow-list
            (and ``trust`` is False); the message names the file and the offending global.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: no such file: {str(path)!r}")
    try:
        with torch.serialization.safe_globals(safe_globals_for_reference()):
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, EOFError, ValueError) as exc:
        if not trust:
            msg = str(exc).strip().splitlines()
            detail = next((m.strip() for m in msg if "Unsupported" in m or "GLOBAL" in m), msg[-1] if msg else "")
            raise ValueError(f"checkpoint: cannot load {str(path)!r} safely ({type(exc).__name__}: {detail[:300]}); if "
                             f"the file holds other Python objects and you trust it, pass --trust-checkpoint") from None
        try:
            ckpt = torch.load(path, map_location=map_location, weights_only=False)
        except Exception as exc2:
            raise ValueError(f"checkpoint: cannot load {str(path)!r} ({type(exc2).__name__}: {exc2})") from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"checkpoint: {str(path)!r} holds a {type(ckpt).__name__}, expected a dict with 'model_pos'")
    return ckpt


# ----------------------------------------------------------------------------------------- state dicts
def fix_state_dict(sd: dict, model: torch.nn.Module) -> dict:
    """A copy of ``sd`` that ``model.load_state_dict`` accepts from old/wrapped checkpoints:
    ``module.`` prefixes stripped; missing BatchNorm ``num_batches_tracked`` set to 0."""
    if not isinstance(sd, dict):
        raise ValueError(f"state_dict: expected a dict of tensors, got {type(sd).__name__}")
    out = dict(sd)
    if out and all(k.startswith("module.") for k in out):
        out = {k[len("module."):]: v for k, v in out.items()}
    for name, buf in model.state_dict().items():
        if name.endswith("num_batches_tracked") and name not in out:
            out[name] = torch.zeros_like(buf)
    return out


def load_model_state(model: torch.nn.Module, sd: dict, what: str = "model_pos") -> None:
    """``model.load_state_dict(fix_state_dict(sd))`` with a message naming the mismatch."""
    if sd is None:
        raise ValueError(f"checkpoint: {what!r} is empty (None)")
    fixed = fix_state_dict(sd, model)
    try:
        model.load_state_dict(fixed, strict=True)
    except RuntimeError as exc:
        mine = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        theirs = {k: tuple(v.shape) for k, v in fixed.items() if hasattr(v, "shape")}
        diff = [k for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)][:4]
        hint = "; ".join(f"{k}: model {mine.get(k)} vs checkpoint {theirs.get(k)}" for k in diff)
        raise ValueError(f"checkpoint: {what!r} does not fit the model built from the flags (-arc, -ch, --dense, "
                         f"--causal, dataset joints): {hint or exc}") from None


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
