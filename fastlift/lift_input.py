"""The one reader of 2D keypoint files for lifting (``fastlift infer`` and ``fastlift stream``).

Both commands read a VideoPose3D-layout 2D file (``positions_2d``: video -> action -> list per
camera of ``(T, J, 2)`` pixel coordinates; ``metadata`` with ``layout_name``,
``keypoints_symmetry`` and, for in-the-wild files, ``video_metadata`` -> ``{'w', 'h'}`` per
video) the same way, so the same file gives the same poses whichever command lifts it:

* **checked** by :func:`fastlift.data.io.read_keypoints` (layout, shapes, NaN/inf, safe unpickling);
* **normalised** to VideoPose3D screen coordinates (``x / w * 2 - 1``, ``y / w * 2 - h / w``) with
  ``--resolution W H`` when given, else the video's ``video_metadata`` entry; a video with
  neither is an error (pixel values are never taken for normalised ones);
* **converted** COCO -> Human3.6M (:func:`coco_to_h36m`) when the model was trained on
  Human3.6M-layout keypoints and the file is COCO (``--convert auto``; ``none`` /
  ``coco-to-h36m`` force it). Models that record no keypoint layout (the reference's
  checkpoints, random models) take the file's layout as is, as the reference's in-the-wild
  pipeline does.

Output files of both commands carry the same :func:`output_metadata`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from fastlift.data.io import Keypoints2D, read_keypoints
from fastlift.skeleton import H36M_17

__all__ = ["coco_to_h36m", "COCO_TO_H36M_DIRECT", "CONVERSIONS", "LiftInput", "read_lift_input",
           "add_input_arguments", "output_metadata", "nest_outputs"]

#: H36M-17 joint -> COCO keypoint for the joints that exist in both layouts.
COCO_TO_H36M_DIRECT = {1: 12, 2: 14, 3: 16, 4: 11, 5: 13, 6: 15, 9: 0, 11: 5, 12: 7, 13: 9, 14: 6, 15: 8, 16: 10}
# Top of the head above the nose, as a fraction of the thorax->nose vector: in the Human3.6M
# skeleton the head top is about as far above the nose-level head joint as that joint is above
# the thorax (115 mm vs 121 mm).
_HEAD_TOP_FACTOR = 0.95
CONVERSIONS = ("auto", "none", "coco-to-h36m")


def coco_to_h36m(kps) -> np.ndarray:
    """COCO-17 keypoints ``(..., 17, D)`` -> Human3.6M-17 layout ``(..., 17, D)``.

    Limbs, hips, shoulders and the nose (Human3.6M's nose-level head joint 9) are copied; the
    pelvis is the mid-hip, the thorax the mid-shoulder, the spine the midpoint of pelvis and
    thorax, and the head top ``nose + 0.95 * (nose - thorax)`` (an approximation: COCO has no
    head-top keypoint).
    """
    k = np.asarray(kps, dtype=np.float32)
    if k.ndim < 2 or k.shape[-2] != 17:
        raise ValueError(f"keypoints: expected COCO-17 keypoints of shape (..., 17, D), got shape {k.shape}")
    out = np.empty_like(k)
    for h, c in COCO_TO_H36M_DIRECT.items():
        out[..., h, :] = k[..., c, :]
    pelvis = (k[..., 11, :] + k[..., 12, :]) / 2
    thorax = (k[..., 5, :] + k[..., 6, :]) / 2
    out[..., 0, :] = pelvis
    out[..., 7, :] = (pelvis + thorax) / 2
    out[..., 8, :] = thorax
    out[..., 10, :] = k[..., 0, :] + _HEAD_TOP_FACTOR * (k[..., 0, :] - thorax)
    return out


def add_input_arguments(p) -> None:
    """``--input``, ``--resolution``, ``--convert``: the flags of :func:`read_lift_input`."""
    p.add_argument("--input", required=True, metavar="PATH",
                   help="2D keypoints npz (VideoPose3D layout, e.g. data_2d_custom_*.npz)")
    p.add_argument("--resolution", type=int, nargs=2, metavar=("W", "H"),
                   help="video resolution in pixels for every video (default: the file's metadata['video_metadata'])")
    p.add_argument("--convert", default="auto", choices=CONVERSIONS,
                   help="keypoint layout conversion (default auto: COCO -> Human3.6M when the model was trained on "
                        "Human3.6M-layout keypoints)")


@dataclass
class LiftInput:
    """A 2D file prepared for a model: normalised (and converted) float32 ``(T, J, 2)`` arrays.

    ``entries``: ``(video, action, camera index, array or None)`` in file order; ``layout_in``:
    the file's layout; ``convert``: ``"none"`` or ``"coco-to-h36m"`` (what was applied);
    ``kps_left``/``kps_right``: flip symmetry of the prepared keypoints; ``num_joints``: joints
    per prepared frame; ``resolution``: ``"--resolution"`` or ``"video_metadata"``.
    """

    path: Path
    entries: list
    layout_in: str
    convert: str
    kps_left: list
    kps_right: list
    num_joints: int
    resolution: str
    keypoints: Optional[Keypoints2D] = field(default=None, repr=False)

    @property
    def arrays(self) -> list:
        return [x for *_, x in self.entries if x is not None]


def read_lift_input(source, *, model_layout: Optional[str], convert: str = "auto", resolution=None,
                    what: str = "--input") -> LiftInput:
    """Read and prepare a 2D file (or a :class:`Keypoints2D` already read) for a model trained on
    ``model_layout`` keypoints (``None``: unknown, the file's layout is used as is)."""
    from fastlift.camera import normalize_screen_coordinates

    kp = source if isinstance(source, Keypoints2D) else read_keypoints(source)
    path = Path(kp.path) if kp.path is not None else Path(str(source))
    if convert not in CONVERSIONS:
        raise ValueError(f"--convert: expected one of {', '.join(CONVERSIONS)}, got {convert!r}")
    if resolution is not None:
        w, h = (int(v) for v in resolution)
        if w < 1 or h < 1:
            raise ValueError(f"--resolution: expected positive W H in pixels, got {w} {h}")
    layout_in = kp.layout_name
    if convert == "auto":
        convert = "coco-to-h36m" if (layout_in == "coco" and model_layout == "h36m") else "none"
        if convert == "none" and model_layout is not None and model_layout != layout_in:
            raise ValueError(f"{what}: keypoints are in the {layout_in!r} layout but the model was trained on "
                             f"{model_layout!r} keypoints, and fastlift has no conversion between them")
    if convert == "coco-to-h36m":
        if layout_in != "coco" or kp.num_joints != 17:
            raise ValueError(f"--convert coco-to-h36m: the input must be COCO-17 keypoints, got layout {layout_in!r} "
                             f"with {kp.num_joints} joints")
        kps_left, kps_right = list(H36M_17.joints_left), list(H36M_17.joints_right)
    else:
        kps_left, kps_right = kp.keypoints_left, kp.keypoints_right
    video_meta = kp.metadata.get("video_metadata") or {}
    entries = []
    for video, actions in kp.positions.items():
        for action, cams in actions.items():
            for i, arr in enumerate(cams):
                if arr is None:
                    entries.append((video, action, i, None))
                    continue
                if resolution is not None:
                    w, h = (int(v) for v in resolution)
                elif isinstance(video_meta.get(video), dict) and "w" in video_meta[video] and "h" in video_meta[video]:
                    w, h = int(video_meta[video]["w"]), int(video_meta[video]["h"])
                else:
                    raise ValueError(f"{what}: no resolution for video {video!r} in {str(path)!r} (its metadata has no "
                                     f"video_metadata entry for it); pass --resolution W H (the video's size in pixels)")
                x = np.asarray(normalize_screen_coordinates(np.asarray(arr, dtype=np.float32), w=w, h=h),
                               dtype=np.float32)
                if convert == "coco-to-h36m":
                    x = coco_to_h36m(x)
                entries.append((video, action, i, np.ascontiguousarray(x, dtype=np.float32)))
    if all(x is None for *_, x in entries):
        raise ValueError(f"{what}: {str(path)!r} holds no keypoint arrays (every camera is None)")
    return LiftInput(path=path, entries=entries, layout_in=layout_in, convert=convert, kps_left=list(kps_left),
                     kps_right=list(kps_right), num_joints=17 if convert == "coco-to-h36m" else kp.num_joints,
                     resolution="--resolution" if resolution is not None else "video_metadata", keypoints=kp)


def nest_outputs(entries: list, outputs: list) -> dict:
    """``outputs[i]`` (or None) for ``entries[i]`` -> video -> action -> list per camera (the input's nesting)."""
    nested: dict = {}
    for (video, action, _, x), y in zip(entries, outputs):
        nested.setdefault(video, {}).setdefault(action, []).append(None if x is None else y)
    return nested


def output_metadata(lift_input: LiftInput, *, joints_out: int, parents=None, joints_symmetry=None, **extra) -> dict:
    """The ``metadata`` entry of a 3D output file (same keys for infer and stream)."""
    if parents is None:
        parents = list(H36M_17.parents) if joints_out == 17 else []
    if joints_symmetry is None and joints_out == 17:
        joints_symmetry = [list(H36M_17.joints_left), list(H36M_17.joints_right)]
    return {"num_joints": int(joints_out), "layout_name": "h36m" if joints_out == 17 else f"{joints_out}-joint",
            "parents": list(parents), "joints_symmetry": joints_symmetry, "units": "m", "space": "camera",
            "input": str(lift_input.path), "input_layout": lift_input.layout_in, "converted": lift_input.convert,
            "resolution_from": lift_input.resolution, **extra}
