"""Reading and writing the VideoPose3D ``.npz`` data files.

The published files are ``np.savez_compressed`` archives whose entries are Python dicts stored
as 0-d object arrays (pickles). Pickles can run code, and these files are shared on the internet,
so fastlift unpickles them with an allow-list (:func:`safe_unpickle`: dicts, lists, tuples,
strings, numbers, booleans, None, numpy arrays/dtypes/scalars); anything else is refused with
:class:`DisallowedPickle` unless the caller trusts the file (:func:`trusted_data`, the
commands' ``--trust-data``):

``data_3d_<dataset>.npz``
    ``positions_3d``: subject -> action -> ``(T, J, 3)`` float32 world coordinates in metres
    (``J = 32`` for Human3.6M, 15 for ``humaneva15``). fastlift also understands an optional
    ``cameras`` entry: subject -> list of camera dicts (see :func:`check_camera_entry`) that
    overrides the built-in camera tables. VideoPose3D ignores unknown entries, so such files
    still load there.

``data_2d_<dataset>_<keypoints>.npz``
    ``positions_2d``: subject -> action -> list with one ``(T, J, 2)`` float32 array of pixel
    coordinates per camera (``None`` marks a camera without detections, as in the HumanEva
    files); ``metadata``: ``{'layout_name': str, 'num_joints': int,
    'keypoints_symmetry': [left indices, right indices]}`` plus, for in-the-wild files,
    ``'video_metadata'``: video -> ``{'w': int, 'h': int}``. fastlift may add an optional
    ``confidence`` entry with the same nesting and one ``(T, J)`` float32 array of detector
    scores in ``[0, 1]`` per camera.

Everything here is numpy; nothing needs torch.
"""
from __future__ import annotations

import contextlib
import contextvars
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from fastlift._files import atomic_savez, object_entry

__all__ = [
    "DataKeyError",
    "DisallowedPickle",
    "SafeNpz",
    "safe_unpickle",
    "trusted_data",
    "Keypoints2D",
    "read_positions_3d",
    "read_keypoints",
    "save_positions_3d",
    "save_positions_2d",
    "check_camera_entry",
    "validate_metadata",
    "H36M_METADATA",
    "COCO_METADATA",
    "HUMANEVA15_METADATA",
    "CAMERA_REQUIRED_KEYS",
]


class DataKeyError(KeyError, ValueError):
    """A key (entry, subject, action, field) is missing from a data file.

    A :class:`KeyError` (the natural type for a missing key) that is also a :class:`ValueError`
    (so command-line front ends report it as bad input), printed without ``KeyError``'s quotes.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


#: ``metadata`` of 2D files in the 17-joint Human3.6M layout (the published value).
H36M_METADATA = {
    "layout_name": "h36m",
    "num_joints": 17,
    "keypoints_symmetry": [[4, 5, 6, 11, 12, 13], [1, 2, 3, 14, 15, 16]],
}
#: ``metadata`` of 2D files in the COCO layout (Detectron / in-the-wild detections).
COCO_METADATA = {
    "layout_name": "coco",
    "num_joints": 17,
    "keypoints_symmetry": [[1, 3, 5, 7, 9, 11, 13, 15], [2, 4, 6, 8, 10, 12, 14, 16]],
}
#: ``metadata`` of 2D files in the 15-joint HumanEva layout.
HUMANEVA15_METADATA = {
    "layout_name": "humaneva15",
    "num_joints": 15,
    "keypoints_symmetry": [[2, 3, 4, 8, 9, 10], [5, 6, 7, 11, 12, 13]],
}

#: Fields every camera dict of a 3D file's ``cameras`` entry must have.
CAMERA_REQUIRED_KEYS = ("orientation", "translation", "center", "focal_length", "res_w", "res_h")


# ----------------------------------------------------------------------------- safe unpickling
class DisallowedPickle(ValueError):
    """A data file's pickled entry needs a Python object outside the allow-list (see :func:`safe_unpickle`)."""


#: Whether pickled objects outside the allow-list may be loaded (``--trust-data``); see :func:`trusted_data`.
_TRUST_DATA: contextvars.ContextVar[bool] = contextvars.ContextVar("fastlift_trust_data", default=False)


@contextlib.contextmanager
def trusted_data(trust: bool = True):
    """Within the block, data files may unpickle any Python object (the commands' ``--trust-data``)."""
    token = _TRUST_DATA.set(bool(trust))
    try:
        yield
    finally:
        _TRUST_DATA.reset(token)


def _allowed_globals() -> dict:
    """``(module, name) -> object`` that a data file's pickle may reference.

    Containers and scalars (dict, list, tuple, str, bytes, int, float, complex, bool; ``None``
    needs no global), numpy arrays (``ndarray`` + ``_reconstruct``/``_frombuffer`` under the
    numpy 1.x ``numpy.core`` and 2.x ``numpy._core`` names), ``numpy.dtype`` and the dtype
    classes, numpy scalars (``multiarray.scalar``), and ``_codecs.encode`` (how protocol-2
    pickles spell bytes). Nothing that runs code, opens files or imports modules.
    """
    import builtins
    import codecs

    try:
        import numpy._core.multiarray as multiarray
        import numpy._core.numeric as numeric
    except ImportError:  # numpy < 2
        import numpy.core.multiarray as multiarray
        import numpy.core.numeric as numeric
    out = {("builtins", n): getattr(builtins, n) for n in
           ("dict", "list", "tuple", "str", "bytes", "bytearray", "int", "float", "complex", "bool")}
    out[("_codecs", "encode")] = codecs.encode
    out[("numpy", "ndarray")] = np.ndarray
    out[("numpy", "dtype")] = np.dtype
    for mod in ("numpy.core", "numpy._core"):
        out[(f"{mod}.multiarray", "_reconstruct")] = multiarray._reconstruct
        out[(f"{mod}.multiarray", "scalar")] = multiarray.scalar
        if hasattr(numeric, "_frombuffer"):
            out[(f"{mod}.numeric", "_frombuffer")] = numeric._frombuffer
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for name in dir(dtypes):
            if name.endswith("DType") and name not in ("ObjectDType", "VoidDType"):
                out[("numpy.dtypes", name)] = getattr(dtypes, name)
    return out


class _SafeUnpickler(pickle.Unpickler):
    def __init__(self, fp, allowed: dict):
        super().__init__(fp, encoding="latin1")
        self._allowed = allowed

    def find_class(self, module, name):
        obj = self._allowed.get((module, name))
        if obj is None:
            raise DisallowedPickle(f"{module}.{name}")
        return obj


def safe_unpickle(fp):
    """Unpickle ``fp`` allowing only plain data (see :func:`_allowed_globals`); raises
    :class:`DisallowedPickle` (message: the refused ``module.name``) for anything else."""
    return _SafeUnpickler(fp, _allowed_globals()).load()


class SafeNpz:
    """A read-only view of an ``.npz`` archive that unpickles object entries with :func:`safe_unpickle`.

    ``files`` lists the entries; ``npz[key]`` reads one (numeric arrays with numpy's own reader,
    ``allow_pickle=False``; object arrays through the allow-list unless ``trust``). A refused
    entry raises :class:`DisallowedPickle` naming the file, the entry and the refused object.
    """

    def __init__(self, path, what: str, trust: bool):
        self.path, self.what, self.trust = Path(path), what, trust
        self._zip = zipfile.ZipFile(self.path)
        names = [n for n in self._zip.namelist() if n.endswith(".npy")]
        self._members = {n[:-4]: n for n in names}
        self.files = list(self._members)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._zip.close()

    def __contains__(self, key) -> bool:
        return key in self._members

    def __getitem__(self, key: str) -> np.ndarray:
        with self._zip.open(self._members[key]) as f:
            version = np.lib.format.read_magic(f)
            _, _, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                           else np.lib.format.read_array_header_2_0(f))
            if not dtype.hasobject:
                f.seek(0)
                return np.lib.format.read_array(f, allow_pickle=False)
            if self.trust:
                f.seek(0)
                return np.lib.format.read_array(f, allow_pickle=True)
            try:
                arr = safe_unpickle(f)
            except DisallowedPickle as exc:
                raise DisallowedPickle(
                    f"{self.what}: entry {key!r} of {str(self.path)!r} needs the Python object {exc}, which data files "
                    f"may not load (only dicts, lists, tuples, strings, numbers, booleans, None and numpy arrays); "
                    f"if you trust this file, pass --trust-data") from None
            if not isinstance(arr, np.ndarray):
                raise ValueError(f"{self.what}: entry {key!r} of {str(self.path)!r} is not a numpy array "
                                 f"(got {type(arr).__name__})")
            return arr


# ----------------------------------------------------------------------------- helpers
def _open_npz(path, what: str, trust: bool | None = None):
    """Open a data ``.npz`` for reading with safe unpickling (``trust``: None = the ``--trust-data``
    context of :func:`trusted_data`)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what}: file {str(path)!r} does not exist")
    if path.is_dir():
        raise FileNotFoundError(f"{what}: {str(path)!r} is a directory, expected a .npz file")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{what}: {str(path)!r} is not a readable .npz archive (not a zip file)")
    try:
        return SafeNpz(path, what, _TRUST_DATA.get() if trust is None else bool(trust))
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{what}: {str(path)!r} is not a readable .npz archive ({exc})") from exc


def _get_entry(npz, key: str, path, what: str, expect_dict: bool = True):
    if key not in npz.files:
        raise DataKeyError(f"{what}: {str(path)!r} has no {key!r} entry (entries: {sorted(npz.files)})")
    try:
        arr = npz[key]
    except DisallowedPickle:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, AttributeError, TypeError,
            IndexError, KeyError, MemoryError) as exc:  # a damaged entry: pickle/numpy raise many types
        raise ValueError(f"{what}: entry {key!r} of {str(path)!r} is damaged or not a numpy array "
                         f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None
    if arr.dtype == object and arr.shape == ():
        value = arr.item()
    else:
        value = arr
    if expect_dict and not isinstance(value, dict):
        raise ValueError(f"{what}: entry {key!r} of {str(path)!r} should hold a dict (saved as a 0-d object "
                         f"array), got {type(value).__name__} with shape {getattr(value, 'shape', None)}")
    return value


def _where(path, *parts) -> str:
    loc = "/".join(str(p) for p in parts)
    return f"{loc} in {str(path)!r}" if path is not None else loc


def _check_pose_array(arr, dims: int, where: str, joints: int | None = None) -> np.ndarray:
    """Check one ``(T, J, dims)`` array (float, finite, at least one frame) and return float32."""
    if arr is None or isinstance(arr, (str, bytes, dict)):
        raise ValueError(f"{where}: expected a (frames, joints, {dims}) array, got {type(arr).__name__}")
    a = np.asarray(arr)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{where}: expected a numeric (frames, joints, {dims}) array, got dtype {a.dtype}")
    if a.ndim != 3 or a.shape[-1] != dims:
        raise ValueError(f"{where}: expected shape (frames, joints, {dims}), got {a.shape}")
    if a.shape[0] == 0:
        raise ValueError(f"{where}: sequence has no frames (shape {a.shape})")
    if joints is not None and a.shape[1] != joints:
        raise ValueError(f"{where}: expected {joints} joints, got {a.shape[1]} (shape {a.shape})")
    finite = np.isfinite(a)
    if not finite.all():
        t, j = np.argwhere(~finite.all(axis=-1))[0]
        n_bad = int((~finite.all(axis=-1)).any(axis=-1).sum())
        raise ValueError(f"{where}: contains NaN/inf values (first at frame {t}, joint {j}; {n_bad} of {a.shape[0]} "
                         f"frames affected)")
    return a.astype(np.float32, copy=False)


def validate_metadata(metadata: Any, where: str = "metadata", require_video_metadata: bool = False) -> dict:
    """Check a 2D file's ``metadata`` dict and return it (a shallow copy).

    Required: ``layout_name`` (str), ``num_joints`` (positive int), ``keypoints_symmetry``
    (two equally long lists of joint indices ``< num_joints``). With
    ``require_video_metadata``, also ``video_metadata``: video -> ``{'w': int, 'h': int}``.
    """
    if not isinstance(metadata, Mapping):
        raise ValueError(f"{where}: expected a dict with layout_name, num_joints and keypoints_symmetry, "
                         f"got {type(metadata).__name__}")
    for key in ("layout_name", "num_joints", "keypoints_symmetry"):
        if key not in metadata:
            raise DataKeyError(f"{where}: missing key {key!r} (keys: {sorted(metadata)})")
    md = dict(metadata)
    nj = md["num_joints"]
    if isinstance(nj, bool) or not isinstance(nj, (int, np.integer)) or nj < 1:
        raise ValueError(f"{where}['num_joints']: expected a positive integer, got {nj!r}")
    md["num_joints"] = int(nj)
    sym = md["keypoints_symmetry"]
    try:
        left, right = [list(int(i) for i in side) for side in sym]
    except (TypeError, ValueError):
        raise ValueError(f"{where}['keypoints_symmetry']: expected [left indices, right indices], got {sym!r}") from None
    if len(left) != len(right):
        raise ValueError(f"{where}['keypoints_symmetry']: left and right lists differ in length "
                         f"({len(left)} vs {len(right)})")
    bad = [i for i in left + right if not 0 <= i < md["num_joints"]]
    if bad:
        raise ValueError(f"{where}['keypoints_symmetry']: indices {bad} are out of range for "
                         f"num_joints={md['num_joints']}")
    if require_video_metadata or md.get("video_metadata") is not None:  # checked whenever present
        vm = md.get("video_metadata")
        if not isinstance(vm, Mapping):
            raise DataKeyError(f"{where}: missing key 'video_metadata' (video -> {{'w': width, 'h': height}}) "
                               f"needed for in-the-wild (custom) detections")
        for video, res in vm.items():
            if not isinstance(res, Mapping) or "w" not in res or "h" not in res:
                raise DataKeyError(f"{where}['video_metadata'][{video!r}]: expected a dict with 'w' and 'h', got {res!r}")
            for k in ("w", "h"):
                v = res[k]
                if isinstance(v, bool) or not isinstance(v, (int, np.integer, float, np.floating)) or v <= 0:
                    raise ValueError(f"{where}['video_metadata'][{video!r}][{k!r}]: expected a positive size in "
                                     f"pixels, got {v!r}")
    return md


def check_camera_entry(cam: Any, where: str = "camera") -> dict:
    """Check one camera dict of a 3D file's ``cameras`` entry; return a normalised copy.

    Units (the raw, human-readable form; readers derive the normalised form):

    * ``orientation`` (4,): unit quaternion ``(w, x, y, z)`` rotating camera axes into world axes,
      as in the VideoPose3D camera tables;
    * ``translation`` (3,): camera centre in world coordinates, **metres** (the positions of the
      file are metres; VideoPose3D's source tables are in millimetres and divide by 1000);
    * ``center`` (2,) and ``focal_length`` (2,): principal point and focal lengths in **pixels**;
    * ``res_w``, ``res_h``: image size in pixels;
    * optional ``radial_distortion`` (3,) ``k1, k2, k3`` and ``tangential_distortion`` (2,)
      ``p1, p2`` (default zeros), ``id`` (str) and ``azimuth`` (degrees, for visualisation).
    """
    if not isinstance(cam, Mapping):
        raise ValueError(f"{where}: expected a dict with {list(CAMERA_REQUIRED_KEYS)}, got {type(cam).__name__}")
    missing = [k for k in CAMERA_REQUIRED_KEYS if k not in cam]
    if missing:
        raise DataKeyError(f"{where}: missing camera field(s) {missing} (fields present: {sorted(cam)})")
    out = dict(cam)
    sizes = {"orientation": 4, "translation": 3, "center": 2, "focal_length": 2,
             "radial_distortion": 3, "tangential_distortion": 2}
    for key, n in sizes.items():
        if key not in out:
            out[key] = np.zeros(n, dtype=np.float32)
            continue
        v = np.asarray(out[key], dtype=np.float64)
        if v.shape != (n,) or not np.isfinite(v).all():
            raise ValueError(f"{where}[{key!r}]: expected {n} finite numbers, got {np.asarray(out[key]).tolist()!r}")
        out[key] = v.astype(np.float32)
    q = out["orientation"].astype(np.float64)
    if abs(np.linalg.norm(q) - 1.0) > 1e-3:
        raise ValueError(f"{where}['orientation']: expected a unit quaternion (w, x, y, z), got norm "
                         f"{np.linalg.norm(q):.6f}")
    if np.abs(out["translation"]).max() > 100.0:
        raise ValueError(f"{where}['translation']: expected the camera position in metres, got "
                         f"{out['translation'].tolist()} (looks like millimetres; divide by 1000)")
    for key in ("res_w", "res_h"):
        v = out[key]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
            raise ValueError(f"{where}[{key!r}]: expected a positive integer number of pixels, got {v!r}")
        out[key] = int(v)
    if np.any(out["focal_length"] <= 0):
        raise ValueError(f"{where}['focal_length']: expected positive focal lengths in pixels, got "
                         f"{out['focal_length'].tolist()}")
    out["id"] = str(out.get("id", ""))
    out["azimuth"] = float(out.get("azimuth", 0.0))
    return out


# ----------------------------------------------------------------------------- 3D
def read_positions_3d(path, trust: bool | None = None) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, list[dict]] | None]:
    """Read a ``data_3d_*.npz`` file.

    Returns ``(positions_3d, cameras)``: ``positions_3d[subject][action]`` is a ``(T, J, 3)``
    float32 array of world coordinates in metres (``J`` equal across the file), ``cameras`` the
    optional ``cameras`` entry (subject -> list of camera dicts checked by
    :func:`check_camera_entry`) or ``None``.

    Raises FileNotFoundError (no file), :class:`DataKeyError` (no ``positions_3d`` entry),
    :class:`DisallowedPickle` (a pickled object outside the allow-list, unless ``trust``; None:
    the :func:`trusted_data` context) and ValueError (bad layout, shapes, NaN/inf, inconsistent
    joint counts), naming the file and the subject/action.
    """
    what = "3D positions"
    with _open_npz(path, what, trust) as npz:
        raw = _get_entry(npz, "positions_3d", path, what)
        cams_raw = _get_entry(npz, "cameras", path, what) if "cameras" in npz.files else None
    positions: dict[str, dict[str, np.ndarray]] = {}
    joints = None
    if not raw:
        raise ValueError(f"{what}: {str(path)!r} holds no subjects")
    for subject, actions in raw.items():
        if not isinstance(actions, Mapping):
            raise ValueError(f"{what}: {_where(path, subject)} should map action names to arrays, got "
                             f"{type(actions).__name__}")
        positions[str(subject)] = {}
        for action, arr in actions.items():
            a = _check_pose_array(arr, 3, f"{what}: {_where(path, subject, action)}", joints)
            joints = a.shape[1]
            positions[str(subject)][str(action)] = a
    cameras = None
    if cams_raw is not None:
        cameras = {}
        for subject, cams in cams_raw.items():
            if isinstance(cams, (str, bytes, Mapping)) or not hasattr(cams, "__len__"):
                raise ValueError(f"{what}: {_where(path, 'cameras', subject)} should be a list of camera dicts, "
                                 f"got {type(cams).__name__}")
            cameras[str(subject)] = [check_camera_entry(c, f"{what}: {_where(path, 'cameras', subject, i)}")
                                     for i, c in enumerate(cams)]
    return positions, cameras


def _atomic_savez(path, **entries) -> Path:
    return atomic_savez(path, durable=True, **entries)


_obj = object_entry


def save_positions_3d(path, positions_3d: Mapping, cameras: Mapping | None = None) -> Path:
    """Write a ``data_3d_*.npz`` file in the published layout (atomically).

    Args:
        path: output file (written exactly there, via a temporary file in the same directory
            and ``os.replace``).
        positions_3d: subject -> action -> ``(T, J, 3)`` world coordinates in metres (numpy or
            torch; stored as float32). ``J`` must be the same for every sequence.
        cameras: optional subject -> list of camera dicts (raw units, see
            :func:`check_camera_entry`), stored under the extra ``cameras`` key.

    Returns the path written.
    """
    what = "save_positions_3d: positions_3d"
    if not isinstance(positions_3d, Mapping) or not positions_3d:
        raise ValueError(f"{what}: expected a non-empty dict subject -> action -> (T, J, 3) array, "
                         f"got {type(positions_3d).__name__}")
    data, joints = {}, None
    for subject, actions in positions_3d.items():
        if not isinstance(actions, Mapping):
            raise ValueError(f"{what}[{subject!r}]: expected a dict action -> array, got {type(actions).__name__}")
        data[str(subject)] = {}
        for action, arr in actions.items():
            a = _check_pose_array(_numpy(arr), 3, f"{what}[{subject!r}][{action!r}]", joints)
            joints = a.shape[1]
            data[str(subject)][str(action)] = np.ascontiguousarray(a, dtype=np.float32)
    entries = {"positions_3d": _obj(data)}
    if cameras is not None:
        if not isinstance(cameras, Mapping):
            raise ValueError(f"save_positions_3d: cameras: expected a dict subject -> list of camera dicts, "
                             f"got {type(cameras).__name__}")
        cams_out = {}
        for subject, cams in cameras.items():
            cams_out[str(subject)] = []
            for i, c in enumerate(cams):
                v = check_camera_entry(c, f"save_positions_3d: cameras[{subject!r}][{i}]")
                # 'intrinsic' is derived from the raw fields when the file is read; not stored.
                cams_out[str(subject)].append({k: x for k, x in v.items() if k != "intrinsic"})
        entries["cameras"] = _obj(cams_out)
    return _atomic_savez(path, **entries)


def _numpy(arr):
    if hasattr(arr, "detach"):  # torch tensor
        arr = arr.detach().cpu().numpy()
    return arr


def save_positions_2d(path, positions_2d: Mapping, metadata: Mapping, confidence: Mapping | None = None) -> Path:
    """Write a ``data_2d_*.npz`` file in the published layout (atomically).

    Args:
        path: output file.
        positions_2d: subject -> action -> list of per-camera ``(T, J, 2)`` pixel coordinates
            (``None`` for a camera without detections); stored as float32.
        metadata: ``layout_name``, ``num_joints``, ``keypoints_symmetry`` (and, for in-the-wild
            files, ``video_metadata``); ``J`` must equal ``num_joints``.
        confidence: optional scores with the same nesting, ``(T, J)`` in ``[0, 1]`` per camera,
            stored under the extra ``confidence`` key.

    Returns the path written.
    """
    md = validate_metadata(metadata, "save_positions_2d: metadata")
    nj = md["num_joints"]
    what = "save_positions_2d: positions_2d"
    if not isinstance(positions_2d, Mapping) or not positions_2d:
        raise ValueError(f"{what}: expected a non-empty dict subject -> action -> list of (T, J, 2) arrays, "
                         f"got {type(positions_2d).__name__}")
    data = {}
    for subject, actions in positions_2d.items():
        if not isinstance(actions, Mapping):
            raise ValueError(f"{what}[{subject!r}]: expected a dict action -> list of arrays, got {type(actions).__name__}")
        data[str(subject)] = {}
        for action, cams in actions.items():
            if isinstance(cams, np.ndarray) or not isinstance(cams, (list, tuple)):
                raise ValueError(f"{what}[{subject!r}][{action!r}]: expected a list with one (T, {nj}, 2) array per "
                                 f"camera, got {type(cams).__name__}")
            out = []
            for i, arr in enumerate(cams):
                if arr is None:
                    out.append(None)
                    continue
                a = _check_pose_array(_numpy(arr), 2, f"{what}[{subject!r}][{action!r}][camera {i}]", nj)
                out.append(np.ascontiguousarray(a, dtype=np.float32))
            data[str(subject)][str(action)] = out
    entries = {"positions_2d": _obj(data), "metadata": _obj(md)}
    if confidence is not None:
        conf_out = {}
        for subject, actions in data.items():
            conf_out[subject] = {}
            for action, cams in actions.items():
                try:
                    cc = confidence[subject][action]
                except (KeyError, TypeError):
                    raise DataKeyError(f"save_positions_2d: confidence has no entry for {subject}/{action}") from None
                if len(cc) != len(cams):
                    raise ValueError(f"save_positions_2d: confidence[{subject!r}][{action!r}] has {len(cc)} cameras, "
                                     f"positions_2d has {len(cams)}")
                conf_out[subject][action] = [
                    None if kp is None else _check_confidence(_numpy(c), kp.shape[:2],
                                                              f"save_positions_2d: confidence[{subject!r}][{action!r}][camera {i}]")
                    for i, (c, kp) in enumerate(zip(cc, cams))]
        entries["confidence"] = _obj(conf_out)
    return _atomic_savez(path, **entries)


def _check_confidence(c, shape, where) -> np.ndarray:
    if c is None:
        raise ValueError(f"{where}: missing scores for a camera that has keypoints")
    a = np.asarray(c, dtype=np.float32)
    if a.shape != tuple(shape):
        raise ValueError(f"{where}: expected shape {tuple(shape)} (frames, joints), got {a.shape}")
    if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
        raise ValueError(f"{where}: expected finite scores in [0, 1], got range [{np.nanmin(a)}, {np.nanmax(a)}]")
    return np.ascontiguousarray(a)


# ----------------------------------------------------------------------------- 2D
@dataclass
class Keypoints2D:
    """2D keypoints of a ``data_2d_*.npz`` file.

    Attributes:
        positions: subject -> action -> list of per-camera ``(T, J, 2)`` float32 arrays (``None``
            for a camera without detections). Pixel coordinates as read; normalised screen
            coordinates (``[0, w] -> [-1, 1]``, aspect preserved) once ``normalized`` is True
            (see :func:`fastlift.data.load_keypoints`).
        metadata: the file's metadata dict (checked by :func:`validate_metadata`).
        confidence: optional subject -> action -> list of ``(T, J)`` float32 scores, or None.
        normalized: whether ``positions`` are normalised screen coordinates.
        path: the file they came from (None for in-memory data).
    """

    positions: dict[str, dict[str, list[np.ndarray | None]]]
    metadata: dict
    confidence: dict[str, dict[str, list[np.ndarray | None]]] | None = None
    normalized: bool = False
    path: Path | None = field(default=None, compare=False)

    @property
    def num_joints(self) -> int:
        return int(self.metadata["num_joints"])

    @property
    def layout_name(self) -> str:
        return str(self.metadata["layout_name"])

    @property
    def keypoints_left(self) -> list[int]:
        """Left keypoint indices (``metadata['keypoints_symmetry'][0]``), for flip augmentation."""
        return [int(i) for i in self.metadata["keypoints_symmetry"][0]]

    @property
    def keypoints_right(self) -> list[int]:
        return [int(i) for i in self.metadata["keypoints_symmetry"][1]]

    def subjects(self) -> list[str]:
        return list(self.positions)

    def __getitem__(self, subject: str) -> dict[str, list[np.ndarray | None]]:
        try:
            return self.positions[subject]
        except KeyError:
            src = f" of {str(self.path)!r}" if self.path else ""
            raise DataKeyError(f"2D keypoints{src}: no subject {subject!r} (subjects: {sorted(self.positions)})") from None

    def __contains__(self, subject) -> bool:
        return subject in self.positions


def read_keypoints(path, require_video_metadata: bool = False, trust: bool | None = None) -> Keypoints2D:
    """Read a ``data_2d_*.npz`` file as stored (pixel coordinates), checking its layout.

    Checks: entries ``positions_2d`` and ``metadata`` exist; metadata is complete; every
    per-camera array is ``(T, num_joints, 2)``, finite (no NaN/inf), non-empty; an optional
    ``confidence`` entry matches the keypoints' shapes. Errors name the file, subject, action
    and camera. Pickled entries are read with the allow-list of :func:`safe_unpickle` unless
    ``trust`` (None: the :func:`trusted_data` context, i.e. ``--trust-data``).
    """
    what = "2D keypoints"
    with _open_npz(path, what, trust) as npz:
        raw = _get_entry(npz, "positions_2d", path, what)
        md_raw = _get_entry(npz, "metadata", path, what)
        conf_raw = _get_entry(npz, "confidence", path, what) if "confidence" in npz.files else None
    md = validate_metadata(md_raw, f"{what}: metadata of {str(path)!r}", require_video_metadata)
    nj = md["num_joints"]
    if not raw:
        raise ValueError(f"{what}: {str(path)!r} holds no subjects")
    positions: dict[str, dict[str, list]] = {}
    for subject, actions in raw.items():
        if not isinstance(actions, Mapping):
            raise ValueError(f"{what}: {_where(path, subject)} should map action names to per-camera lists, got "
                             f"{type(actions).__name__}")
        positions[str(subject)] = {}
        for action, cams in actions.items():
            loc = _where(path, subject, action)
            if isinstance(cams, np.ndarray) and cams.dtype != object:
                raise ValueError(f"{what}: {loc} should be a list of per-camera (T, {nj}, 2) arrays, got one array of "
                                 f"shape {cams.shape}")
            if not hasattr(cams, "__len__") or isinstance(cams, (str, bytes, Mapping)):
                raise ValueError(f"{what}: {loc} should be a list of per-camera arrays, got {type(cams).__name__}")
            out = []
            for i, arr in enumerate(cams):
                if arr is None:
                    out.append(None)
                    continue
                a = _check_pose_array(arr, 2, f"{what}: {_where(path, subject, action)} camera {i}", None)
                if a.shape[1] != nj:
                    raise ValueError(f"{what}: {loc} camera {i} has {a.shape[1]} joints but metadata['num_joints'] is "
                                     f"{nj} (layout {md['layout_name']!r})")
                out.append(a)
            positions[str(subject)][str(action)] = out
    confidence = None
    if conf_raw is not None:
        confidence = {}
        for subject, actions in positions.items():
            confidence[subject] = {}
            for action, cams in actions.items():
                try:
                    cc = conf_raw[subject][action]
                except (KeyError, TypeError):
                    raise DataKeyError(f"{what}: 'confidence' entry of {str(path)!r} has no {subject}/{action}") from None
                if len(cc) != len(cams):
                    raise ValueError(f"{what}: confidence of {_where(path, subject, action)} has {len(cc)} cameras, "
                                     f"keypoints have {len(cams)}")
                confidence[subject][action] = [
                    None if kp is None else _check_confidence(c, kp.shape[:2], f"{what}: confidence of "
                                                              f"{_where(path, subject, action)} camera {i}")
                    for i, (c, kp) in enumerate(zip(cc, cams))]
    return Keypoints2D(positions=positions, metadata=md, confidence=confidence, normalized=False, path=Path(path))
