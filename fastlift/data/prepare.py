"""2D keypoint preparation and sequence selection, as the reference ``run.py`` does them.

* :func:`load_keypoints` reads a ``data_2d_*.npz`` file, checks it against a
  :class:`~fastlift.data.datasets.MocapDataset` (every 3D subject/action present, one 2D
  sequence per camera, 2D at least as long as the 3D), trims 2D sequences that are longer than
  their 3D sequence, and normalises pixel coordinates with each camera's resolution.
* :func:`fetch` selects subjects and actions and returns per-sequence lists (one entry per
  subject x action x camera) of intrinsics, camera-space 3D poses and normalised 2D keypoints,
  optionally cropped (``subset``) and temporally downsampled (``downsample``) with the
  reference's deterministic per-sequence crop (:func:`deterministic_crop`).
"""
from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from fastlift import camera as cam_mod
from fastlift.data.datasets import CustomDataset, HumanEvaDataset, Human36mDataset, MocapDataset
from fastlift.data.io import DataKeyError, Keypoints2D, read_keypoints

__all__ = [
    "H36M_TRAIN_SUBJECTS",
    "H36M_TEST_SUBJECTS",
    "HUMANEVA_TRAIN_SUBJECTS",
    "HUMANEVA_TEST_SUBJECTS",
    "SPLITS",
    "FetchResult",
    "deterministic_random",
    "deterministic_crop",
    "parse_list",
    "action_matches",
    "load_keypoints",
    "fetch",
    "dataset_path",
    "keypoints_path",
    "open_dataset",
    "load",
]

#: Standard Human3.6M protocol: train on S1, S5, S6, S7, S8; test on S9, S11 (run.py defaults).
H36M_TRAIN_SUBJECTS = ("S1", "S5", "S6", "S7", "S8")
H36M_TEST_SUBJECTS = ("S9", "S11")
#: HumanEva-I protocol used with VideoPose3D: train on the Train/ chunks, test on Validate/.
HUMANEVA_TRAIN_SUBJECTS = ("Train/S1", "Train/S2", "Train/S3")
HUMANEVA_TEST_SUBJECTS = ("Validate/S1", "Validate/S2", "Validate/S3")

#: dataset name -> {"train": subjects, "test": subjects}. The synthetic data uses the
#: Human3.6M subject names, so it shares the Human3.6M split.
SPLITS = {
    "h36m": {"train": H36M_TRAIN_SUBJECTS, "test": H36M_TEST_SUBJECTS},
    "synthetic": {"train": H36M_TRAIN_SUBJECTS, "test": H36M_TEST_SUBJECTS},
    "humaneva15": {"train": HUMANEVA_TRAIN_SUBJECTS, "test": HUMANEVA_TEST_SUBJECTS},
}


# ----------------------------------------------------------------------------- crop
def deterministic_random(min_value: int, max_value: int, data: str) -> int:
    """The reference's hash-based "random" integer in ``[min_value, max_value]``.

    The first 4 bytes of ``sha256(data)`` read as an unsigned little-endian integer ``r`` give
    ``int(r / (2**32 - 1) * (max_value - min_value)) + min_value``. ``max_value`` itself is
    returned only when ``r == 2**32 - 1``.
    """
    if not isinstance(data, str):
        raise ValueError(f"data: expected the seed string (e.g. the sequence length as text), got {data!r}")
    raw = int.from_bytes(hashlib.sha256(data.encode()).digest()[:4], byteorder="little", signed=False)
    return int(raw / (2 ** 32 - 1) * (max_value - min_value)) + min_value


def deterministic_crop(num_frames: int, subset: float = 1.0, downsample: int = 1) -> tuple[int, int]:
    """``(start, length)`` of the reference's crop of a ``num_frames``-long sequence.

    With ``subset < 1`` the reference keeps ``length = round(num_frames // downsample * subset)
    * downsample`` frames starting at ``deterministic_random(0, num_frames - length + 1,
    str(num_frames))`` (seeded by the length, so every camera of a video gets the same crop), and
    then takes every ``downsample``-th frame of ``[start, start + length)``. With ``subset == 1``
    it is ``(0, num_frames)`` and only the stride applies. Python's ``round`` (half to even) is
    used, as in the reference.
    """
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or num_frames < 0:
        raise ValueError(f"num_frames: expected a non-negative integer, got {num_frames!r}")
    subset = _check_subset(subset)
    downsample = _check_downsample(downsample)
    if subset >= 1:
        return 0, int(num_frames)
    length = int(round(num_frames // downsample * subset) * downsample)
    start = deterministic_random(0, num_frames - length + 1, str(num_frames))
    return start, length


def _check_subset(subset) -> float:
    try:
        s = float(subset)
    except (TypeError, ValueError):
        raise ValueError(f"subset: expected a fraction in (0, 1], got {subset!r}") from None
    if not 0 < s <= 1:
        raise ValueError(f"subset: expected a fraction in (0, 1], got {subset!r}")
    return s


def _check_downsample(downsample) -> int:
    if isinstance(downsample, bool) or not isinstance(downsample, (int, np.integer)) or downsample < 1:
        raise ValueError(f"downsample: expected a positive integer frame stride, got {downsample!r}")
    return int(downsample)


# ----------------------------------------------------------------------------- selection helpers
def parse_list(value, name: str) -> list[str] | None:
    """``"S1,S5"`` / ``["S1", "S5"]`` -> ``["S1", "S5"]``; ``None``, ``"*"`` or ``""`` -> None."""
    if value is None:
        return None
    if isinstance(value, str):
        if value.strip() in ("", "*"):
            return None
        items = [v.strip() for v in value.split(",")]
    else:
        try:
            items = [str(v) for v in value]
        except TypeError:
            raise ValueError(f"{name}: expected a comma-separated string or a list of names, got {value!r}") from None
    items = [v for v in items if v]
    if not items:
        return None
    return items


def action_matches(action: str, action_filter: Sequence[str] | None) -> bool:
    """The reference's action filter: keep ``action`` if it starts with any filter entry
    (``'Walk'`` matches ``'Walking 1'`` and ``'WalkDog'``; ``None`` keeps everything)."""
    if action_filter is None:
        return True
    return any(action.startswith(a) for a in action_filter)


# ----------------------------------------------------------------------------- 2D preparation
def load_keypoints(keypoints, dataset: MocapDataset) -> Keypoints2D:
    """Read (or take) 2D keypoints, check them against ``dataset``, trim and normalise them.

    Args:
        keypoints: path of a ``data_2d_*.npz`` file, or a :class:`Keypoints2D` in pixels (not
            modified; a normalised copy is returned).
        dataset: the matching 3D dataset (its cameras give each sequence's resolution).

    Returns:
        :class:`Keypoints2D` with ``normalized=True``: every ``(T, J, 2)`` array in normalised
        screen coordinates (:func:`fastlift.camera.normalize_screen_coordinates` with the
        camera's ``res_w``/``res_h``), float32, and 2D sequences of 3D-labelled actions trimmed
        to the 3D length.

    Raises (messages name the file, subject, action and camera):
        DataKeyError: a subject or action of the 3D dataset is missing from the 2D file, or a
            2D subject has no cameras in the dataset.
        ValueError: camera counts differ; a camera's 2D sequence is shorter than the 3D one;
            a labelled camera has no detections (None); NaN values or joint-count mismatches
            (from :func:`fastlift.data.read_keypoints`); a camera index beyond the subject's
            cameras.
    """
    if isinstance(keypoints, Keypoints2D):
        if keypoints.normalized:
            raise ValueError("keypoints: already normalised (load_keypoints was applied twice?)")
        kp = copy.deepcopy(keypoints)
    else:
        kp = read_keypoints(keypoints, require_video_metadata=isinstance(dataset, CustomDataset))
    src = f" ({str(kp.path)!r})" if kp.path else ""

    for subject in dataset.subjects():
        if subject not in kp.positions:
            raise DataKeyError(f"2D keypoints{src}: subject {subject!r} of the {dataset.name} dataset is missing "
                               f"(2D subjects: {kp.subjects()})")
        for action in dataset.actions(subject):
            if action not in kp.positions[subject]:
                raise DataKeyError(f"2D keypoints{src}: action {action!r} of subject {subject!r} is missing "
                                   f"(2D actions of {subject!r}: {list(kp.positions[subject])})")
            if not dataset.has_3d(subject, action):
                continue
            poses_3d = dataset.positions_3d(subject, action)
            cams_2d = kp.positions[subject][action]
            if len(cams_2d) != len(poses_3d):
                raise ValueError(f"2D keypoints{src}: {subject}/{action} has {len(cams_2d)} camera(s), the 3D "
                                 f"dataset has {len(poses_3d)} camera(s) for it")
            for cam_idx, kps in enumerate(cams_2d):
                n3 = poses_3d[cam_idx].shape[0]
                if kps is None:
                    raise ValueError(f"2D keypoints{src}: {subject}/{action} camera {cam_idx} has no detections "
                                     f"(None) but the sequence has 3D poses")
                n2 = kps.shape[0]
                if n2 < n3:
                    raise ValueError(f"2D keypoints{src}: {subject}/{action} camera {cam_idx} has {n2} frames, fewer "
                                     f"than the {n3} frames of 3D motion capture")
                if n2 > n3:  # some Human3.6M videos have extra frames at the end
                    cams_2d[cam_idx] = kps[:n3]
                    if kp.confidence is not None and kp.confidence[subject][action][cam_idx] is not None:
                        kp.confidence[subject][action][cam_idx] = kp.confidence[subject][action][cam_idx][:n3]

    for subject, actions in kp.positions.items():
        try:
            cams = dataset.cameras(subject)
        except KeyError:
            raise DataKeyError(f"2D keypoints{src}: subject {subject!r} has no camera parameters in the "
                               f"{dataset.name} dataset, so its keypoints cannot be normalised") from None
        for action, cams_2d in actions.items():
            if len(cams_2d) > len(cams):
                raise ValueError(f"2D keypoints{src}: {subject}/{action} has {len(cams_2d)} cameras, subject "
                                 f"{subject!r} has only {len(cams)}")
            for cam_idx, kps in enumerate(cams_2d):
                if kps is None:
                    continue
                cam = cams[cam_idx]
                cams_2d[cam_idx] = np.asarray(
                    cam_mod.normalize_screen_coordinates(kps, w=cam["res_w"], h=cam["res_h"]), dtype=np.float32)
    kp.normalized = True
    return kp


# ----------------------------------------------------------------------------- fetch
class FetchResult(NamedTuple):
    """Per-sequence lists (one entry per subject x action x camera, in file order).

    Attributes:
        cameras: ``(9,)`` float32 normalised intrinsics per sequence, or None when the
            dataset's cameras have none (HumanEva).
        poses_3d: ``(T, J_out, 3)`` float32 camera-space poses (joint 0 = trajectory, others
            root-relative; metres), or None with ``with_3d=False``.
        poses_2d: ``(T, J_in, 2)`` float32 normalised keypoints.
        labels: ``(subject, action, camera_index)`` per sequence.
        confidence: ``(T, J_in)`` float32 detector scores per sequence, or None when the 2D
            file has none.
    """

    cameras: list[np.ndarray] | None
    poses_3d: list[np.ndarray] | None
    poses_2d: list[np.ndarray]
    labels: list[tuple[str, str, int]]
    confidence: list[np.ndarray] | None

    @property
    def num_frames(self) -> int:
        return int(sum(p.shape[0] for p in self.poses_2d))


def fetch(dataset: MocapDataset, keypoints: Keypoints2D, subjects, action_filter=None, subset: float = 1.0,
          downsample: int = 1, with_3d: bool = True) -> FetchResult:
    """Select sequences as the reference's ``fetch``.

    Args:
        dataset: the 3D dataset (cameras, camera-space poses).
        keypoints: normalised keypoints from :func:`load_keypoints`.
        subjects: names (list or comma-separated string), e.g. :data:`H36M_TRAIN_SUBJECTS`.
        action_filter: None / ``"*"`` for all actions, else prefixes (list or comma-separated):
            an action is kept if its name starts with one of them (``"Walk"`` keeps
            ``"Walking 1"``).
        subset: keep this fraction of each sequence, a deterministic crop
            (:func:`deterministic_crop`); 1 keeps everything.
        downsample: keep every ``downsample``-th frame.
        with_3d: also return the 3D poses (every selected sequence must have them); False for
            unlabelled (semi-supervised) subjects.

    Returns:
        :class:`FetchResult`. Arrays are views into the loaded data; copy before writing.
        Cameras without detections (``None`` in HumanEva files) are skipped.
    """
    if not isinstance(keypoints, Keypoints2D):
        raise ValueError(f"keypoints: expected Keypoints2D from fastlift.data.load_keypoints, got "
                         f"{type(keypoints).__name__}")
    if not keypoints.normalized:
        raise ValueError("keypoints: pixel coordinates; normalise them with fastlift.data.load_keypoints(path, dataset) "
                         "first")
    subject_list = parse_list(subjects, "subjects")
    if not subject_list:
        raise ValueError(f"subjects: expected at least one subject name, got {subjects!r}")
    filt = parse_list(action_filter, "action_filter")
    subset = _check_subset(subset)
    stride = _check_downsample(downsample)

    out_cams: list = []
    out_3d: list = []
    out_2d: list = []
    out_conf: list = []
    labels: list = []
    all_intrinsics = True
    for subject in subject_list:
        if subject not in keypoints.positions:
            raise DataKeyError(f"subjects: {subject!r} is not in the 2D keypoints (subjects: {keypoints.subjects()})")
        cams = dataset.cameras(subject)
        for action, cams_2d in keypoints.positions[subject].items():
            if not action_matches(action, filt):
                continue
            if len(cams_2d) != len(cams):
                raise ValueError(f"{subject}/{action}: {len(cams_2d)} 2D camera sequences but subject {subject!r} has "
                                 f"{len(cams)} cameras")
            poses_3d = None
            if with_3d:
                if not dataset.has_3d(subject, action):
                    raise DataKeyError(f"{subject}/{action}: no 3D poses in the {dataset.name} dataset (use "
                                       f"with_3d=False for unlabelled subjects)")
                poses_3d = dataset.positions_3d(subject, action)
                if len(poses_3d) != len(cams_2d):
                    raise ValueError(f"{subject}/{action}: {len(cams_2d)} 2D camera sequences but {len(poses_3d)} 3D")
            for cam_idx, kps in enumerate(cams_2d):
                if kps is None:
                    continue
                out_2d.append(kps)
                labels.append((subject, action, cam_idx))
                if "intrinsic" in cams[cam_idx]:
                    out_cams.append(np.asarray(cams[cam_idx]["intrinsic"], dtype=np.float32))
                else:
                    all_intrinsics = False
                if poses_3d is not None:
                    out_3d.append(poses_3d[cam_idx])
                if keypoints.confidence is not None:
                    out_conf.append(keypoints.confidence[subject][action][cam_idx])
    if not out_2d:
        raise ValueError(f"no sequences selected: subjects {subject_list} with action_filter {filt} match nothing "
                         f"in the 2D keypoints")

    if subset < 1 or stride > 1:
        for i in range(len(out_2d)):
            n = out_2d[i].shape[0]
            start, length = deterministic_crop(n, subset, stride)
            if length == 0:
                s, a, c = labels[i]
                raise ValueError(f"subset={subset} leaves no frames of {s}/{a} camera {c} ({n} frames)")
            sl = slice(start, start + length, stride)
            out_2d[i] = out_2d[i][sl]
            if with_3d:
                out_3d[i] = out_3d[i][sl]
            if keypoints.confidence is not None:
                out_conf[i] = out_conf[i][sl]

    return FetchResult(
        cameras=out_cams if (all_intrinsics and out_cams) else None,
        poses_3d=out_3d if with_3d else None,
        poses_2d=out_2d,
        labels=labels,
        confidence=out_conf if keypoints.confidence is not None else None,
    )


# ----------------------------------------------------------------------------- by name
def dataset_path(data_dir, dataset: str) -> Path:
    """``<data_dir>/data_3d_<dataset>.npz``."""
    return Path(data_dir) / f"data_3d_{dataset}.npz"


def keypoints_path(data_dir, dataset: str, keypoints: str) -> Path:
    """``<data_dir>/data_2d_<dataset>_<keypoints>.npz``."""
    return Path(data_dir) / f"data_2d_{dataset}_{keypoints}.npz"


def open_dataset(dataset: str, data_dir="data", keypoints: str | None = None) -> MocapDataset:
    """Open a dataset by its ``run.py`` name (``-d``): ``h36m``, ``humaneva15``, ``synthetic``
    (Human3.6M layout), or ``custom...`` (needs ``keypoints``, the ``-k`` name, since in-the-wild
    data lives in the 2D file)."""
    if not isinstance(dataset, str) or not dataset:
        raise ValueError(f"dataset: expected a name such as 'h36m', 'humaneva15', 'synthetic' or 'custom', got {dataset!r}")
    if dataset.startswith("custom"):
        if not keypoints:
            raise ValueError(f"keypoints: the {dataset!r} dataset is read from data_2d_{dataset}_<keypoints>.npz; "
                             f"pass the keypoints name")
        return CustomDataset(keypoints_path(data_dir, dataset, keypoints), name=dataset)
    path = dataset_path(data_dir, dataset)
    if dataset == "h36m" or dataset.startswith("synthetic"):
        return Human36mDataset(path, name=dataset)
    if dataset.startswith("humaneva"):
        return HumanEvaDataset(path, name=dataset)
    raise ValueError(f"dataset: unknown dataset {dataset!r}; expected 'h36m', 'humaneva15', 'synthetic' or 'custom...'")


def load(dataset: str, keypoints: str, data_dir="data") -> tuple[MocapDataset, Keypoints2D]:
    """``open_dataset`` + ``load_keypoints`` for the ``run.py``-style names ``-d`` and ``-k``:
    reads ``data_3d_<dataset>.npz`` and ``data_2d_<dataset>_<keypoints>.npz`` from ``data_dir``."""
    ds = open_dataset(dataset, data_dir, keypoints)
    kp = load_keypoints(keypoints_path(data_dir, dataset, keypoints), ds)
    return ds, kp
