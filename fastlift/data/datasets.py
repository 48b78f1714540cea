"""Motion-capture datasets in the VideoPose3D layout: Human3.6M, HumanEva-I, in-the-wild video.

A dataset holds, per subject and action, the world-space motion capture (``(T, J, 3)`` float32,
metres), the subject's cameras, and the same motion in each camera's space prepared as the
reference ``run.py`` does: ``world_to_camera`` with the camera's orientation and translation,
then every joint but the root made relative to the root, so joint 0 keeps the global
trajectory (camera coordinates of the root, metres) and joints ``1..J-1`` are root-relative.

Camera dicts have the fields of :func:`fastlift.camera.h36m_cameras`: ``id``, ``res_w``,
``res_h`` (pixels), ``azimuth`` (degrees), ``center`` and ``focal_length`` (pixels),
``radial_distortion`` (3,), ``tangential_distortion`` (2,), ``intrinsic`` (9,) normalised
``[fx, fy, cx, cy, k1, k2, k3, p1, p2]``, and where known ``orientation`` (4,) camera->world
quaternion and ``translation`` (3,) camera centre in metres. HumanEva-I cameras have no
intrinsics (none are published), hence no ``center``/``focal_length``/``intrinsic``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fastlift import camera as cam_mod
from fastlift.data.io import DataKeyError, read_keypoints, read_positions_3d
from fastlift.skeleton import H36M_17, H36M_32, H36M_KEPT_JOINTS, HUMANEVA_15, Skeleton

__all__ = [
    "MocapDataset",
    "Human36mDataset",
    "HumanEvaDataset",
    "CustomDataset",
    "prepare_camera",
    "default_intrinsics",
    "CUSTOM_CAMERA_EXTRINSICS",
]

#: The published in-the-wild dataset borrows Human3.6M S1's first camera's extrinsics
#: (orientation, translation in metres) so that predictions render upright; they are only
#: used for visualisation.
CUSTOM_CAMERA_EXTRINSICS = {
    "orientation": (0.1407056450843811, -0.1500701755285263, -0.755240797996521, 0.6223280429840088),
    "translation": (1.8411070556640625, 4.95528466796875, 1.5634454345703125),
    "azimuth": 70.0,
}

# Mean focal length of the four Human3.6M cameras divided by their image width (1000 px).
_H36M_RELATIVE_FOCAL = 1.1472


def default_intrinsics(res_w: int, res_h: int) -> dict:
    """A plausible pinhole camera for a video of ``res_w x res_h`` pixels with unknown intrinsics.

    Principal point at the image centre, no distortion, and ``fx = fy`` equal to the mean
    Human3.6M focal length scaled to the longer image side (about a 47 degree field of view across
    it). Returns raw pixel fields (``center``, ``focal_length``, ``radial_distortion``,
    ``tangential_distortion``, ``res_w``, ``res_h``) plus ``intrinsic`` (9,) normalised.
    """
    for name, v in (("res_w", res_w), ("res_h", res_h)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
            raise ValueError(f"{name}: expected a positive integer number of pixels, got {v!r}")
    f = _H36M_RELATIVE_FOCAL * max(res_w, res_h)
    cam = {
        "res_w": int(res_w),
        "res_h": int(res_h),
        "center": np.array([res_w / 2, res_h / 2], dtype=np.float32),
        "focal_length": np.array([f, f], dtype=np.float32),
        "radial_distortion": np.zeros(3, dtype=np.float32),
        "tangential_distortion": np.zeros(2, dtype=np.float32),
    }
    cam["intrinsic"] = cam_mod.camera_intrinsics(cam)
    return cam


def prepare_camera(cam: dict) -> dict:
    """Camera dict in fastlift's in-memory form from a file's raw entry (pixels, metres).

    Adds ``intrinsic`` (computed from the pixel fields with :func:`fastlift.camera.camera_intrinsics`)
    and makes the array fields float32. The input is not modified.
    """
    out = {}
    for k, v in cam.items():
        if isinstance(v, np.ndarray) or isinstance(v, (list, tuple)):
            out[k] = np.asarray(v, dtype=np.float32)
        else:
            out[k] = v
    if all(k in out for k in cam_mod.INTRINSIC_KEYS):
        out["intrinsic"] = cam_mod.camera_intrinsics(out)
    return out


def _to_camera_space(positions: np.ndarray, cam: dict) -> np.ndarray:
    """World ``(T, J, 3)`` -> camera space, root-relative except joint 0 (the trajectory)."""
    pos = np.asarray(cam_mod.world_to_camera(positions, R=cam["orientation"], t=cam["translation"]),
                     dtype=np.float32)
    pos[:, 1:] -= pos[:, :1]
    return pos


class MocapDataset:
    """Base class: motion capture per subject and action, cameras per subject.

    Args:
        fps: frame rate (frames per second), or None when unknown.
        skeleton: the 3D joints' :class:`fastlift.skeleton.Skeleton`.
        positions: subject -> action -> ``(T, J, 3)`` float32 world coordinates in metres, with
            ``J == skeleton.num_joints``; None or empty for 2D-only datasets.
        cameras: subject -> list of camera dicts (see the module docstring).
        name: dataset name used in messages and by :func:`fastlift.data.open_dataset`.
        path: file the data came from (messages only).

    Access: ``subjects()``, ``actions(subject)``, ``cameras(subject)``, ``positions(subject,
    action)`` (world), ``positions_3d(subject, action)`` (list per camera, camera space prepared
    as in ``run.py``), and ``dataset[subject][action]`` -> ``{'positions', 'cameras',
    'positions_3d'}`` as in the reference.
    """

    def __init__(self, fps, skeleton: Skeleton, positions: dict | None, cameras: dict[str, list[dict]],
                 name: str = "mocap", path=None):
        if fps is not None and not (float(fps) > 0):
            raise ValueError(f"fps: expected a positive frame rate or None, got {fps!r}")
        self._fps = None if fps is None else fps
        self._skeleton = skeleton
        self.name = name
        self.path = None if path is None else Path(path)
        self._cameras = cameras
        self._data: dict[str, dict[str, dict]] = {}
        for subject, actions in (positions or {}).items():
            self._data[subject] = {}
            for action, pos in actions.items():
                if pos.shape[1] != skeleton.num_joints:
                    raise ValueError(f"{self._src()}: {subject}/{action} has {pos.shape[1]} joints, the "
                                     f"{skeleton.name} skeleton has {skeleton.num_joints}")
                self._data[subject][action] = {"positions": pos}
        self._prepare_camera_space()

    # ------------------------------------------------------------------ preparation
    def _src(self) -> str:
        return f"{self.name} dataset" + (f" ({str(self.path)!r})" if self.path else "")

    def _prepare_camera_space(self) -> None:
        for subject, actions in self._data.items():
            cams = self.cameras(subject)
            for action, rec in actions.items():
                rec["cameras"] = cams
                if "positions" not in rec:
                    continue
                missing = [i for i, c in enumerate(cams) if "orientation" not in c or "translation" not in c]
                if missing:
                    raise ValueError(f"{self._src()}: subject {subject!r} has 3D poses but camera(s) {missing} have no "
                                     f"extrinsics (orientation/translation) to convert them to camera space")
                rec["positions_3d"] = [_to_camera_space(rec["positions"], c) for c in cams]

    # ------------------------------------------------------------------ access
    @property
    def fps(self):
        """Frames per second (None if unknown)."""
        return self._fps

    def skeleton(self) -> Skeleton:
        """The 3D joints' skeleton (a method, as in VideoPose3D's ``MocapDataset.skeleton()``)."""
        return self._skeleton

    def subjects(self) -> list[str]:
        return list(self._data)

    def __contains__(self, subject) -> bool:
        return subject in self._data

    def __getitem__(self, subject: str) -> dict[str, dict]:
        try:
            return self._data[subject]
        except KeyError:
            raise DataKeyError(f"{self._src()}: no subject {subject!r} (subjects: {self.subjects()})") from None

    def actions(self, subject: str) -> list[str]:
        return list(self[subject])

    def _record(self, subject: str, action: str) -> dict:
        actions = self[subject]
        try:
            return actions[action]
        except KeyError:
            raise DataKeyError(f"{self._src()}: subject {subject!r} has no action {action!r} "
                               f"(actions: {list(actions)})") from None

    def positions(self, subject: str, action: str) -> np.ndarray:
        """World coordinates ``(T, J, 3)`` float32, metres."""
        rec = self._record(subject, action)
        if "positions" not in rec:
            raise DataKeyError(f"{self._src()}: {subject}/{action} has no 3D poses")
        return rec["positions"]

    def positions_3d(self, subject: str, action: str) -> list[np.ndarray]:
        """Per camera ``(T, J, 3)`` float32 camera-space poses: joint 0 = root trajectory (metres,
        camera coordinates), joints 1.. relative to the root."""
        rec = self._record(subject, action)
        if "positions_3d" not in rec:
            raise DataKeyError(f"{self._src()}: {subject}/{action} has no 3D poses")
        return rec["positions_3d"]

    def has_3d(self, subject: str, action: str) -> bool:
        return subject in self._data and "positions_3d" in self._data[subject].get(action, {})

    def cameras(self, subject: str | None = None):
        """Cameras of ``subject`` (list of dicts), or all known subjects' (dict) if None."""
        if subject is None:
            return {s: self.cameras(s) for s in self._camera_subjects()}
        try:
            return self._cameras[subject]
        except KeyError:
            raise DataKeyError(f"{self._src()}: no camera parameters for subject {subject!r} "
                               f"(subjects with cameras: {self._camera_subjects()})") from None

    def _camera_subjects(self) -> list[str]:
        return list(self._cameras)

    def supports_semi_supervised(self) -> bool:
        return False

    def __repr__(self) -> str:
        n = sum(len(a) for a in self._data.values())
        frames = sum(r["positions"].shape[0] for a in self._data.values() for r in a.values() if "positions" in r)
        return (f"{type(self).__name__}(name={self.name!r}, subjects={len(self._data)}, sequences={n}, "
                f"frames={frames}, fps={self._fps}, skeleton={self._skeleton.name!r})")


def _file_cameras(file_cams: dict | None) -> dict[str, list[dict]]:
    return {s: [prepare_camera(c) for c in cams] for s, cams in (file_cams or {}).items()}


class Human36mDataset(MocapDataset):
    """Human3.6M (``data_3d_h36m.npz``) or any file in its layout, e.g. the synthetic data.

    Args:
        path: ``data_3d_*.npz`` with 32-joint world coordinates in metres.
        remove_static_joints: drop the 15 joints the evaluation skeleton ignores (32 -> 17
            joints, shoulders re-parented to the thorax), as the reference does.
        name: dataset name (``"h36m"``; ``"synthetic"`` for the generated data).
        fps: frame rate (50 for Human3.6M).

    Cameras: the published Human3.6M tables (:func:`fastlift.camera.h36m_cameras`) for S1..S11,
    overridden per subject by the file's optional ``cameras`` entry.
    """

    def __init__(self, path, remove_static_joints: bool = True, name: str = "h36m", fps: float = 50):
        positions, file_cams = read_positions_3d(path)
        joints = next(iter(next(iter(positions.values())).values())).shape[1]
        if joints != H36M_32.num_joints:
            raise ValueError(f"{name} dataset ({str(path)!r}): expected the 32-joint Human3.6M layout, got {joints} joints")
        cameras = {s: cam_mod.h36m_cameras(s) for s in cam_mod.H36M_SUBJECTS}
        cameras.update(_file_cameras(file_cams))
        for subject in positions:
            if subject not in cameras:
                raise DataKeyError(f"{name} dataset ({str(path)!r}): subject {subject!r} is not a Human3.6M subject "
                                   f"({list(cam_mod.H36M_SUBJECTS)}) and the file has no 'cameras' entry for it")
        if remove_static_joints:
            kept = list(H36M_KEPT_JOINTS)
            positions = {s: {a: np.ascontiguousarray(p[:, kept]) for a, p in acts.items()} for s, acts in positions.items()}
            skeleton = H36M_17
        else:
            skeleton = H36M_32
        super().__init__(fps, skeleton, positions, cameras, name=name, path=path)

    def supports_semi_supervised(self) -> bool:
        return True


class HumanEvaDataset(MocapDataset):
    """HumanEva-I (``data_3d_humaneva15.npz``): 15 joints, 60 fps, subjects ``Train/S1`` ...

    Cameras: the published extrinsics (:func:`fastlift.camera.humaneva_cameras`, no intrinsics)
    for every split prefix (``Train/``, ``Validate/``, ``Unlabeled/...``), overridden by the
    file's optional ``cameras`` entry.
    """

    def __init__(self, path, name: str = "humaneva15", fps: float = 60):
        positions, file_cams = read_positions_3d(path)
        joints = next(iter(next(iter(positions.values())).values())).shape[1]
        if joints != HUMANEVA_15.num_joints:
            raise ValueError(f"{name} dataset ({str(path)!r}): expected the 15-joint HumanEva layout, got {joints} "
                             f"joints")
        self._file_cams = _file_cameras(file_cams)
        cameras = dict(self._file_cams)
        for subject in positions:
            if subject not in cameras:
                try:
                    cameras[subject] = cam_mod.humaneva_cameras(subject)
                except KeyError:
                    raise DataKeyError(f"{name} dataset ({str(path)!r}): subject {subject!r} is not a HumanEva-I subject "
                                       f"(S1..S4 with a Train/, Validate/ or Unlabeled/ prefix) and the file has no "
                                       f"'cameras' entry for it") from None
        super().__init__(fps, HUMANEVA_15, positions, cameras, name=name, path=path)

    def cameras(self, subject: str | None = None):
        if subject is not None and subject not in self._cameras:
            try:
                self._cameras[subject] = cam_mod.humaneva_cameras(subject)
            except (KeyError, TypeError):
                pass
        return super().cameras(subject)

    def supports_semi_supervised(self) -> bool:
        return True


class CustomDataset(MocapDataset):
    """In-the-wild videos (``data_2d_custom_<name>.npz``): one subject per video, one action
    ``'custom'``, one camera, no 3D poses.

    Each video's camera has the video's resolution (``metadata['video_metadata']``), the
    default intrinsics of :func:`default_intrinsics`, and (as the published dataset) the
    extrinsics of Human3.6M S1's first camera, used only to render predictions upright.

    Args:
        detections_path: the 2D file.
        remove_static_joints: skeleton of the predictions: 17-joint (True) or 32-joint Human3.6M.
        fps: frame rate of the videos if known (the published class uses None).
    """

    def __init__(self, detections_path, remove_static_joints: bool = True, fps=None, name: str = "custom"):
        kp = read_keypoints(detections_path, require_video_metadata=True)
        videos = kp.metadata["video_metadata"]
        cameras: dict[str, list[dict]] = {}
        for video, res in videos.items():
            cam = default_intrinsics(int(res["w"]), int(res["h"]))
            cam["id"] = str(video)
            cam["azimuth"] = CUSTOM_CAMERA_EXTRINSICS["azimuth"]
            cam["orientation"] = np.array(CUSTOM_CAMERA_EXTRINSICS["orientation"], dtype=np.float32)
            cam["translation"] = np.array(CUSTOM_CAMERA_EXTRINSICS["translation"], dtype=np.float32)
            cameras[str(video)] = [cam]
        missing = [s for s in kp.subjects() if s not in cameras]
        if missing:
            raise DataKeyError(f"{name} dataset ({str(detections_path)!r}): videos {missing} have keypoints but no "
                               f"entry in metadata['video_metadata']")
        super().__init__(fps, H36M_17 if remove_static_joints else H36M_32, None, cameras, name=name,
                         path=detections_path)
        for video in cameras:
            self._data[video] = {"custom": {"cameras": cameras[video]}}
