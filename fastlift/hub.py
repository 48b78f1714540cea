"""Pretrained lifters shipped inside the package (``fastlift/weights/*.pt``); ``fastlift.pretrained(name)``.

* ``"symmetric"``: 27-frame symmetric lifter (whole-sequence video lifting, ``fastlift video``,
  ``fastlift infer`` without a checkpoint).
* ``"causal"``: 27-frame causal lifter (no look-ahead: ``fastlift video --stream``, live cameras).

Both take 17 Human3.6M-layout keypoints as ``fastlift video`` builds them from a COCO-17 detector
(pelvis, spine, thorax and head top derived from hips, shoulders and nose, see
:func:`fastlift.data.synthetic.coco_derived_joints`), normalised screen coordinates, and predict
17 root-relative Human3.6M joints in metres (camera space). They were trained by
``fastlift train`` on the embedded synthetic data only; docs/models.md records the commands,
data, epochs and metrics. Files hold fp16 weights (fp32 BatchNorm statistics); loading gives an
fp32 model.

Each file also records ``framing``: the median size (bounding-box diagonal) and centre of the
training data's normalised 2D keypoints. The lifter is not scale invariant, and a person filling
a portrait phone video is three times larger in normalised coordinates than a Human3.6M subject,
so ``fastlift video`` rescales each sequence to that size (:func:`reframe`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

__all__ = ["pretrained", "pretrained_path", "pretrained_info", "pack_checkpoint", "framing_of", "reframe", "NAMES"]

_FILES = {"symmetric": "lifter_27f_symmetric.pt", "causal": "lifter_27f_causal.pt"}
NAMES = tuple(_FILES)


def pretrained_path(name: str) -> Path:
    """Path of the shipped checkpoint ``name`` (one of :data:`NAMES`)."""
    if name not in _FILES:
        raise ValueError(f"name: expected one of {list(NAMES)}, got {name!r}")
    path = Path(__file__).resolve().parent / "weights" / _FILES[name]
    if not path.is_file():
        raise FileNotFoundError(f"pretrained {name!r}: {str(path)!r} is missing from this installation "
                                f"(the package data was not installed)")
    return path


def pretrained_info(name: str) -> dict:
    """The shipped checkpoint's ``fastlift`` record (architecture, framing, training summary)."""
    from fastlift.checkpoint import load_checkpoint

    return dict(load_checkpoint(pretrained_path(name), what=f"pretrained {name!r}").get("fastlift", {}))


def pretrained(name: str = "symmetric", impl: str | None = "auto") -> torch.nn.Module:
    """A shipped lifter in eval mode on the CPU, fp32.

    Args:
        name: ``"symmetric"`` or ``"causal"``.
        impl: ``None`` for the reference model, else fastlift's fused model with this
            implementation (default ``"auto"``).

    Returns:
        The lifter: input ``(B, T, 17, 2)`` normalised keypoints, output ``(B, T - 26, 17, 3)``.
    """
    from fastlift.checkpoint import lifter_from_checkpoint, load_checkpoint

    path = pretrained_path(name)
    ckpt = load_checkpoint(path, what=f"pretrained {name!r}")
    model, _ = lifter_from_checkpoint(ckpt, path=path, what=f"pretrained {name!r}", impl=impl)
    return model.float().eval()


def pack_checkpoint(src, dst, *, framing: dict, training: dict | None = None) -> Path:
    """Write a shippable copy of training checkpoint ``src`` to ``dst``: only ``model_pos``
    (weights in fp16, BatchNorm statistics fp32), the architecture record, ``framing``
    (``{"diag": float, "center": [x, y]}``, see :func:`reframe`) and a ``training`` summary."""
    from fastlift._files import atomic_output
    from fastlift.checkpoint import load_checkpoint

    ckpt = load_checkpoint(src)
    sd = {}
    for k, v in ckpt["model_pos"].items():
        if v.is_floating_point() and "running_" not in k:
            v = v.to(torch.float16)
        sd[k] = v.clone()
    record = dict(ckpt.get("fastlift", {}))
    record = {"architecture": record.get("architecture", {}), "framing": dict(framing),
              "training": dict(training or {})}
    with atomic_output(dst) as tmp:
        torch.save({"model_pos": sd, "fastlift": record}, tmp)
    return Path(dst)


def framing_of(keypoints: np.ndarray) -> dict:
    """``{"diag", "center"}`` of normalised 2D keypoints ``(N, J, 2)``: median bounding-box
    diagonal and median bounding-box centre over frames."""
    k = np.asarray(keypoints, dtype=np.float64)
    lo, hi = k.min(axis=-2), k.max(axis=-2)
    diag = np.linalg.norm(hi - lo, axis=-1)
    center = (lo + hi) / 2
    return {"diag": float(np.median(diag)), "center": [float(c) for c in np.median(center, axis=0)]}


def reframe(keypoints: np.ndarray, framing: dict) -> np.ndarray:
    """Scale and shift one sequence of normalised keypoints ``(T, J, 2)`` so that its median
    bounding-box diagonal and centre are ``framing``'s. One similarity transform for the whole
    sequence, so motion towards/away from the camera and up/down stays in the input."""
    k = np.asarray(keypoints, dtype=np.float32)
    if k.ndim != 3 or k.shape[-1] != 2 or k.shape[0] < 1:
        raise ValueError(f"keypoints: expected (T, J, 2) with T >= 1, got shape {k.shape}")
    own = framing_of(k)
    if not own["diag"] > 0:
        raise ValueError("keypoints: all keypoints coincide in every frame; cannot scale them")
    s = framing["diag"] / own["diag"]
    c_own = np.asarray(own["center"], dtype=np.float32)
    c_to = np.asarray(framing["center"], dtype=np.float32)
    return ((k - c_own) * s + c_to).astype(np.float32)
