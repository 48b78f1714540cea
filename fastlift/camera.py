"""Camera model of VideoPose3D: screen normalisation, quaternion rigid transforms, projection.

Everything here is batched over arbitrary leading dimensions and works on any device and
floating dtype torch supports. Each function accepts torch tensors, numpy arrays or nested
lists; the result is a torch tensor when any array argument is a tensor and a numpy array when
none is. Secondary arguments (quaternions, translations, camera parameters) are converted to the
dtype and device of the points argument (or of the first tensor argument when the points are
not a tensor). Integer inputs are treated as floating point (float64 for numpy-only calls,
torch's default dtype otherwise).

Conventions (those of the Human3.6M / HumanEva files used by VideoPose3D):

* Quaternions are ``(w, x, y, z)`` with the scalar part first, shape ``(..., 4)``. The rotation
  formulas assume unit quaternions (the conjugate is then the inverse).
* A camera's ``orientation`` quaternion rotates camera coordinates into world coordinates and
  ``translation`` is the camera centre in world coordinates, so
  ``world = qrot(orientation, cam) + translation``.
* Screen coordinates are normalised so that ``x`` in ``[0, res_w]`` pixels maps to ``[-1, 1]``
  and ``y`` keeps the aspect ratio (``[0, res_h]`` maps to ``[-res_h/res_w, res_h/res_w]``).
* The intrinsic vector is ``[fx, fy, cx, cy, k1, k2, k3, p1, p2]`` in normalised units
  (focal length ``f_px / res_w * 2``, centre normalised like a screen point); ``k`` are radial and
  ``p`` tangential distortion coefficients.

Camera tables: the Human3.6M intrinsics of its four cameras and per-subject extrinsics, and the
HumanEva-I per-subject extrinsics, with the values published with VideoPose3D
(``common/h36m_dataset.py``, ``common/humaneva_dataset.py``). See :func:`h36m_cameras` and
:func:`humaneva_cameras`.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Real

import numpy as np
import torch

__all__ = [
    "normalize_screen_coordinates",
    "image_coordinates",
    "qrot",
    "qinverse",
    "world_to_camera",
    "camera_to_world",
    "project_to_2d",
    "project_to_2d_linear",
    "flip_camera_intrinsics",
    "camera_intrinsics",
    "validate_camera",
    "h36m_cameras",
    "humaneva_cameras",
    "H36M_SUBJECTS",
    "HUMANEVA_SUBJECTS",
    "INTRINSIC_KEYS",
]


# ---------------------------------------------------------------------- input handling
def _shape(x) -> tuple:
    return tuple(x.shape)


def _to_tensors(*named):
    """Convert ``(value, name)`` pairs to tensors sharing one dtype and device.

    The first pair is the "points" argument. Returns ``(tensors, numpy_out)`` where
    ``numpy_out`` is True when no argument was a torch tensor.
    """
    arrays = []
    for value, name in named:
        if isinstance(value, torch.Tensor):
            arrays.append(value)
            continue
        if isinstance(value, (np.ndarray, list, tuple, np.generic)):
            arr = np.asarray(value)
        else:
            raise TypeError(f"{name}: expected a torch.Tensor, numpy array or nested list of numbers, "
                            f"got {type(value).__name__}")
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"{name}: expected a real numeric array, got dtype {arr.dtype}")
        arrays.append(arr)

    tensor_args = [a for a in arrays if isinstance(a, torch.Tensor)]
    numpy_out = not tensor_args
    device = tensor_args[0].device if tensor_args else torch.device("cpu")
    dtype = None
    for a in arrays:  # the points argument first, then the others in order
        if isinstance(a, torch.Tensor) and a.is_floating_point():
            dtype = a.dtype
            break
        if isinstance(a, np.ndarray) and a.dtype.kind == "f":
            dtype = torch.from_numpy(np.zeros(0, dtype=a.dtype)).dtype
            break
    if dtype is None:
        dtype = torch.float64 if numpy_out else torch.get_default_dtype()

    out = []
    for a in arrays:
        if isinstance(a, np.ndarray):
            if not a.flags.writeable or not a.dtype.isnative:
                a = a.astype(a.dtype.newbyteorder("="))  # a writable, native-order copy
            a = torch.from_numpy(a)
        out.append(a.to(device=device, dtype=dtype))
    return out, numpy_out


def _result(t: torch.Tensor, numpy_out: bool):
    return t.detach().cpu().numpy() if numpy_out else t


def _check_last_dim(t, size: int, name: str, what: str) -> None:
    if t.ndim < 1 or t.shape[-1] != size:
        raise ValueError(f"{name}: expected shape (..., {size}) ({what}), got shape {_shape(t)}")


def _broadcast(name_a: str, a, name_b: str, b) -> tuple:
    """Broadcast shape of the leading dims of ``a`` and ``b`` (last dim excluded)."""
    try:
        return tuple(torch.broadcast_shapes(tuple(a.shape[:-1]), tuple(b.shape[:-1])))
    except RuntimeError:
        raise ValueError(f"{name_a} of shape {_shape(a)} and {name_b} of shape {_shape(b)}: leading dimensions "
                         f"{_shape(a)[:-1]} and {_shape(b)[:-1]} do not broadcast") from None


def _check_resolution(w, h) -> tuple[float, float]:
    for name, v in (("w", w), ("h", h)):
        if isinstance(v, bool) or not isinstance(v, (Real, np.integer, np.floating)):
            raise TypeError(f"{name}: expected a positive number of pixels, got {type(v).__name__} {v!r}")
        if not (math.isfinite(float(v)) and float(v) > 0):
            raise ValueError(f"{name}: expected a positive finite number of pixels, got {v!r}")
    return w, h


# ---------------------------------------------------------------------- screen coordinates
def normalize_screen_coordinates(X, w, h):
    """Pixel coordinates -> normalised screen coordinates.

    Args:
        X: ``(..., 2)`` pixel coordinates ``(x, y)``.
        w, h: image width and height in pixels.

    Returns:
        ``X / w * 2 - [1, h / w]``: ``x`` in ``[0, w]`` maps to ``[-1, 1]``, ``y`` keeps the aspect
        ratio. Same shape and floating dtype as ``X`` (numpy in, numpy out; integer input gives
        float64 for numpy, the default dtype for torch).
    """
    w, h = _check_resolution(w, h)
    (x,), numpy_out = _to_tensors((X, "X"))
    _check_last_dim(x, 2, "X", "pixel coordinates x, y")
    if numpy_out:
        # numpy arithmetic, matching the published computation bit for bit.
        arr = x.numpy()
        return (arr / w * 2 - np.array([1.0, h / w])).astype(arr.dtype, copy=False)
    offset = torch.tensor([1.0, h / w], dtype=x.dtype, device=x.device)
    return x / w * 2 - offset


def image_coordinates(X, w, h):
    """Inverse of :func:`normalize_screen_coordinates`: normalised coordinates -> pixels.

    ``X``: ``(..., 2)``; returns ``(X + [1, h / w]) * w / 2`` with the same shape and dtype.
    """
    w, h = _check_resolution(w, h)
    (x,), numpy_out = _to_tensors((X, "X"))
    _check_last_dim(x, 2, "X", "normalised screen coordinates x, y")
    if numpy_out:
        arr = x.numpy()
        return ((arr + np.array([1.0, h / w])) * w / 2).astype(arr.dtype, copy=False)
    offset = torch.tensor([1.0, h / w], dtype=x.dtype, device=x.device)
    return (x + offset) * w / 2


# ---------------------------------------------------------------------- quaternions
def _qrot(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    shape = torch.broadcast_shapes(q.shape[:-1], v.shape[:-1])
    q = q.expand(*shape, 4)
    v = v.expand(*shape, 3)
    qvec = q[..., 1:]
    uv = torch.linalg.cross(qvec, v, dim=-1)
    uuv = torch.linalg.cross(qvec, uv, dim=-1)
    return v + 2 * (q[..., :1] * uv + uuv)


def _qinverse(q: torch.Tensor) -> torch.Tensor:
    return torch.cat((q[..., :1], -q[..., 1:]), dim=-1)


def qrot(q, v):
    """Rotate vectors ``v`` by unit quaternions ``q``.

    Args:
        q: ``(..., 4)`` unit quaternions ``(w, x, y, z)``.
        v: ``(..., 3)`` vectors.
        The leading dimensions broadcast against each other (e.g. ``q`` of shape ``(4,)`` rotates
        every vector of ``v``; ``q`` of shape ``(N, 1, 4)`` rotates ``v`` of shape ``(N, J, 3)``
        per row).

    Returns:
        ``(*broadcast(q[..., 0], v[..., 0]).shape, 3)`` rotated vectors,
        ``v + 2 w (u x v) + 2 u x (u x v)`` with ``u = (x, y, z)``. The formula is the rotation only
        for unit quaternions; it is not renormalised.
    """
    (vt, qt), numpy_out = _to_tensors((v, "v"), (q, "q"))
    _check_last_dim(qt, 4, "q", "quaternions w, x, y, z")
    _check_last_dim(vt, 3, "v", "3D vectors")
    _broadcast("q", qt, "v", vt)
    return _result(_qrot(qt, vt), numpy_out)


def qinverse(q):
    """Inverse of unit quaternions: the conjugate ``(w, -x, -y, -z)``. ``q``: ``(..., 4)``."""
    (qt,), numpy_out = _to_tensors((q, "q"))
    _check_last_dim(qt, 4, "q", "quaternions w, x, y, z")
    return _result(_qinverse(qt), numpy_out)


def _check_extrinsics(xt, rt, tt) -> None:
    _check_last_dim(xt, 3, "X", "3D points")
    _check_last_dim(rt, 4, "R", "orientation quaternion w, x, y, z")
    _check_last_dim(tt, 3, "t", "translation")
    _broadcast("R", rt, "X", xt)
    _broadcast("t", tt, "X", xt)


def world_to_camera(X, R, t):
    """World coordinates -> camera coordinates.

    Args:
        X: ``(..., 3)`` points in world space.
        R: ``(4,)`` camera orientation quaternion (camera -> world rotation), or ``(..., 4)``
            broadcastable against ``X``'s leading dims.
        t: ``(3,)`` camera position in world space, same unit as ``X`` (or broadcastable ``(..., 3)``).

    Returns:
        ``qrot(qinverse(R), X - t)``, same shape as ``X``. Exact inverse of
        :func:`camera_to_world` (up to rounding) for unit quaternions.
    """
    (xt, rt, tt), numpy_out = _to_tensors((X, "X"), (R, "R"), (t, "t"))
    _check_extrinsics(xt, rt, tt)
    return _result(_qrot(_qinverse(rt), xt - tt), numpy_out)


def camera_to_world(X, R, t):
    """Camera coordinates -> world coordinates: ``qrot(R, X) + t``.

    Shapes and units as in :func:`world_to_camera`, of which this is the inverse.
    """
    (xt, rt, tt), numpy_out = _to_tensors((X, "X"), (R, "R"), (t, "t"))
    _check_extrinsics(xt, rt, tt)
    return _result(_qrot(rt, xt) + tt, numpy_out)


# ---------------------------------------------------------------------- projection
def _align_camera_params(xt: torch.Tensor, pt: torch.Tensor) -> torch.Tensor:
    """View ``camera_params`` ``(*L, 9)`` as ``(*L, 1, ..., 1, 9)`` with ``X``'s number of dims.

    The leading dims ``L`` line up with the *leading* dims of ``X`` (as in the reference, where
    ``(N, 9)`` parameters go with ``(N, *, 3)`` points), then broadcast.
    """
    if pt.ndim > xt.ndim:
        raise ValueError(f"camera_params: shape {_shape(pt)} has more dimensions than X of shape {_shape(xt)}; "
                         f"expected (9,) or (*L, 9) with L a prefix of X's leading dims")
    view = pt.reshape(*pt.shape[:-1], *([1] * (xt.ndim - pt.ndim)), pt.shape[-1])
    try:
        torch.broadcast_shapes(tuple(view.shape[:-1]), tuple(xt.shape[:-1]))
    except RuntimeError:
        raise ValueError(f"camera_params of shape {_shape(pt)} does not line up with X of shape {_shape(xt)}: "
                         f"its leading dims {_shape(pt)[:-1]} must match (or be 1 for) X's first "
                         f"{pt.ndim - 1} dims {_shape(xt)[:pt.ndim - 1]}") from None
    return view


def _prepare_projection(X, camera_params):
    (xt, pt), numpy_out = _to_tensors((X, "X"), (camera_params, "camera_params"))
    _check_last_dim(xt, 3, "X", "3D points in camera space")
    _check_last_dim(pt, 9, "camera_params", "normalised intrinsics fx, fy, cx, cy, k1, k2, k3, p1, p2")
    return xt, _align_camera_params(xt, pt), numpy_out


def project_to_2d(X, camera_params):
    """Project camera-space points to normalised screen coordinates with lens distortion.

    Args:
        X: ``(..., 3)`` points in camera space (usually ``(N, T, J, 3)``), any unit.
        camera_params: ``(9,)`` or ``(*L, 9)`` normalised intrinsics
            ``[fx, fy, cx, cy, k1, k2, k3, p1, p2]``; ``L`` lines up with the leading dims of ``X``
            (``(N, 9)`` for ``(N, T, J, 3)`` points) and broadcasts.

    Returns:
        ``(..., 2)`` normalised screen coordinates. The published (differentiable) formula:
        ``u = clamp(xy / z, -1, 1)``, ``r2 = |u|^2``,
        ``radial = 1 + k1 r2 + k2 r2^2 + k3 r2^3``, ``tan = p1 u_x + p2 u_y``,
        ``u' = u (radial + tan) + p r2``, result ``f u' + c``. Note the clamp of ``xy / z`` to
        ``[-1, 1]`` (points outside a 90-degree field of view stick to its border; ``z = 0``
        gives ``+-1`` or NaN for ``x = 0``) and that the tangential term is the reference's, not
        OpenCV's.
    """
    xt, p, numpy_out = _prepare_projection(X, camera_params)
    f = p[..., 0:2]
    c = p[..., 2:4]
    k = p[..., 4:7]
    tp = p[..., 7:9]
    u = torch.clamp(xt[..., :2] / xt[..., 2:3], min=-1, max=1)
    r2 = torch.sum(u * u, dim=-1, keepdim=True)
    radial = 1 + torch.sum(k * torch.cat((r2, r2 * r2, r2 * r2 * r2), dim=-1), dim=-1, keepdim=True)
    tan = torch.sum(tp * u, dim=-1, keepdim=True)
    distorted = u * (radial + tan) + tp * r2
    return _result(f * distorted + c, numpy_out)


def project_to_2d_linear(X, camera_params):
    """Pinhole projection ``f * clamp(xy / z, -1, 1) + c`` (distortion ignored).

    Same arguments and shapes as :func:`project_to_2d` (``camera_params`` still has 9 entries;
    only ``f`` and ``c`` are used); the clamp is the reference's.
    """
    xt, p, numpy_out = _prepare_projection(X, camera_params)
    u = torch.clamp(xt[..., :2] / xt[..., 2:3], min=-1, max=1)
    return _result(p[..., 0:2] * u + p[..., 2:4], numpy_out)


def flip_camera_intrinsics(intrinsic):
    """Intrinsics of the horizontally mirrored camera: ``cx`` and ``p1`` negated.

    ``intrinsic``: ``(..., 9)`` normalised intrinsics. Returns a new array/tensor of the same
    shape, dtype and kind (numpy in, numpy out); differentiable for tensors.
    """
    (pt,), numpy_out = _to_tensors((intrinsic, "intrinsic"))
    _check_last_dim(pt, 9, "intrinsic", "normalised intrinsics fx, fy, cx, cy, k1, k2, k3, p1, p2")
    sign = torch.ones(9, dtype=pt.dtype, device=pt.device)
    sign[2] = -1
    sign[7] = -1
    return _result(pt * sign, numpy_out)


# ---------------------------------------------------------------------- camera dictionaries
#: Raw pixel fields :func:`camera_intrinsics` needs.
INTRINSIC_KEYS = ("center", "focal_length", "radial_distortion", "tangential_distortion", "res_w", "res_h")

_FIELD_SHAPES = {
    "center": (2,),
    "focal_length": (2,),
    "radial_distortion": (3,),
    "tangential_distortion": (2,),
    "orientation": (4,),
    "translation": (3,),
    "intrinsic": (9,),
}


def validate_camera(cam, required=INTRINSIC_KEYS):
    """Check a camera dictionary and return it unchanged.

    Args:
        cam: mapping of camera fields (see :func:`h36m_cameras`).
        required: keys that must be present (default: the raw intrinsic fields).

    Raises:
        TypeError: ``cam`` is not a mapping.
        KeyError: required keys are missing (the message lists the missing and required keys).
        ValueError: a present field has the wrong shape or non-finite values, or ``res_w`` /
            ``res_h`` is not a positive integer.
    """
    if not isinstance(cam, Mapping):
        raise TypeError(f"cam: expected a dict of camera fields, got {type(cam).__name__}")
    missing = [k for k in required if k not in cam]
    if missing:
        raise KeyError(f"cam: missing camera field(s) {missing}; required: {list(required)}, "
                       f"present: {sorted(cam)}")
    for key in ("res_w", "res_h"):
        if key in cam:
            v = cam[key]
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < 1:
                raise ValueError(f"cam[{key!r}]: expected a positive integer number of pixels, got {v!r}")
    for key, shape in _FIELD_SHAPES.items():
        if key not in cam:
            continue
        try:
            arr = np.asarray(cam[key], dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"cam[{key!r}]: expected {shape[0]} numbers, got {cam[key]!r}") from None
        if arr.shape != shape:
            raise ValueError(f"cam[{key!r}]: expected shape {shape}, got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"cam[{key!r}]: contains NaN or infinite values: {arr.tolist()}")
    return cam


def camera_intrinsics(cam) -> np.ndarray:
    """Normalised intrinsic vector ``(9,)`` float32 from a dict of raw pixel fields.

    ``cam`` needs ``center`` (2, pixels), ``focal_length`` (2, pixels), ``radial_distortion`` (3),
    ``tangential_distortion`` (2), ``res_w`` and ``res_h`` (pixels). Returns
    ``[focal_length / res_w * 2, normalize_screen_coordinates(center), k1, k2, k3, p1, p2]``
    computed in float32 exactly as the reference dataset classes do.
    """
    validate_camera(cam, INTRINSIC_KEYS)
    w, h = int(cam["res_w"]), int(cam["res_h"])
    center = normalize_screen_coordinates(np.asarray(cam["center"], dtype=np.float32), w=w, h=h)
    focal = np.asarray(cam["focal_length"], dtype=np.float32) / w * 2
    return np.concatenate((focal.astype(np.float32), center.astype(np.float32),
                           np.asarray(cam["radial_distortion"], dtype=np.float32),
                           np.asarray(cam["tangential_distortion"], dtype=np.float32)))


# Human3.6M: intrinsics per camera (pixels), as published with VideoPose3D.
_H36M_INTRINSICS = (
    {
        "id": "54138969",
        "center": (512.54150390625, 515.4514770507812),
        "focal_length": (1145.0494384765625, 1143.7811279296875),
        "radial_distortion": (-0.20709891617298126, 0.24777518212795258, -0.0030751503072679043),
        "tangential_distortion": (-0.0009756988729350269, -0.00142447161488235),
        "res_w": 1000,
        "res_h": 1002,
        "azimuth": 70,
    },
    {
        "id": "55011271",
        "center": (508.8486328125, 508.0649108886719),
        "focal_length": (1149.6756591796875, 1147.5916748046875),
        "radial_distortion": (-0.1942136287689209, 0.2404085397720337, 0.006819975562393665),
        "tangential_distortion": (-0.0016190266469493508, -0.0027408944442868233),
        "res_w": 1000,
        "res_h": 1000,
        "azimuth": -70,
    },
    {
        "id": "58860488",
        "center": (519.8158569335938, 501.40264892578125),
        "focal_length": (1149.1407470703125, 1148.7989501953125),
        "radial_distortion": (-0.2083381861448288, 0.25548800826072693, -0.0024604974314570427),
        "tangential_distortion": (0.0014843869721516967, -0.0007599993259645998),
        "res_w": 1000,
        "res_h": 1000,
        "azimuth": 110,
    },
    {
        "id": "60457274",
        "center": (514.9682006835938, 501.88201904296875),
        "focal_length": (1145.5113525390625, 1144.77392578125),
        "radial_distortion": (-0.198384091258049, 0.21832367777824402, -0.008947807364165783),
        "tangential_distortion": (-0.0005872055771760643, -0.0018133620033040643),
        "res_w": 1000,
        "res_h": 1002,
        "azimuth": -110,
    },
)

# Human3.6M extrinsics per subject and camera: (orientation quaternion w, x, y, z; translation in mm).
# S2, S3 and S4 have no published extrinsics.
_H36M_EXTRINSICS = {
    "S1": (
        ((0.1407056450843811, -0.1500701755285263, -0.755240797996521, 0.6223280429840088),
         (1841.1070556640625, 4955.28466796875, 1563.4454345703125)),
        ((0.6157187819480896, -0.764836311340332, -0.14833825826644897, 0.11794740706682205),
         (1761.278564453125, -5078.0068359375, 1606.2650146484375)),
        ((0.14651472866535187, -0.14647851884365082, 0.7653023600578308, -0.6094175577163696),
         (-1846.7777099609375, 5215.04638671875, 1491.972412109375)),
        ((0.5834008455276489, -0.7853162288665771, 0.14548823237419128, -0.14749594032764435),
         (-1794.7896728515625, -3722.698974609375, 1574.8927001953125)),
    ),
    "S2": None,
    "S3": None,
    "S4": None,
    "S5": (
        ((0.1467377245426178, -0.162370964884758, -0.7551892995834351, 0.6178938746452332),
         (2097.3916015625, 4880.94482421875, 1605.732421875)),
        ((0.6159758567810059, -0.7626792192459106, -0.15728192031383514, 0.1189815029501915),
         (2031.7008056640625, -5167.93310546875, 1612.923095703125)),
        ((0.14291371405124664, -0.12907841801643372, 0.7678384780883789, -0.6110143065452576),
         (-1620.5948486328125, 5171.65869140625, 1496.43701171875)),
        ((0.5920479893684387, -0.7814217805862427, 0.1274748593568802, -0.15036417543888092),
         (-1637.1737060546875, -3867.3173828125, 1547.033203125)),
    ),
    "S6": (
        ((0.1337897777557373, -0.15692396461963654, -0.7571090459823608, 0.6198879480361938),
         (1935.4517822265625, 4950.24560546875, 1618.0838623046875)),
        ((0.6147197484970093, -0.7628812789916992, -0.16174767911434174, 0.11819244921207428),
         (1969.803955078125, -5128.73876953125, 1632.77880859375)),
        ((0.1529948115348816, -0.13529130816459656, 0.7646096348762512, -0.6112781167030334),
         (-1769.596435546875, 5185.361328125, 1476.993408203125)),
        ((0.5916101336479187, -0.7804774045944214, 0.12832270562648773, -0.1561593860387802),
         (-1721.668701171875, -3884.13134765625, 1540.4879150390625)),
    ),
    "S7": (
        ((0.1435241848230362, -0.1631336808204651, -0.7548328638076782, 0.6188824772834778),
         (1974.512939453125, 4926.3544921875, 1597.8326416015625)),
        ((0.6141672730445862, -0.7638262510299683, -0.1596645563840866, 0.1177929937839508),
         (1937.0584716796875, -5119.7900390625, 1631.5665283203125)),
        ((0.14550060033798218, -0.12874816358089447, 0.7660516500473022, -0.6127139329910278),
         (-1741.8111572265625, 5208.24951171875, 1464.8245849609375)),
        ((0.5912848114967346, -0.7821764349937439, 0.12445473670959473, -0.15196487307548523),
         (-1734.7105712890625, -3832.42138671875, 1548.5830078125)),
    ),
    "S8": (
        ((0.14110587537288666, -0.15589867532253265, -0.7561917304992676, 0.619644045829773),
         (2150.65185546875, 4896.1611328125, 1611.9046630859375)),
        ((0.6169601678848267, -0.7647668123245239, -0.14846350252628326, 0.11158157885074615),
         (2219.965576171875, -5148.453125, 1613.0440673828125)),
        ((0.1471444070339203, -0.13377119600772858, 0.7670128345489502, -0.6100369691848755),
         (-1571.2215576171875, 5137.0185546875, 1498.1761474609375)),
        ((0.5927824378013611, -0.7825870513916016, 0.12147816270589828, -0.14631995558738708),
         (-1476.913330078125, -3896.7412109375, 1547.97216796875)),
    ),
    "S9": (
        ((0.15540587902069092, -0.15548215806484222, -0.7532095313072205, 0.6199594736099243),
         (2044.45849609375, 4935.1171875, 1481.2275390625)),
        ((0.618784487247467, -0.7634735107421875, -0.14132238924503326, 0.11933968216180801),
         (1990.959716796875, -5123.810546875, 1568.8048095703125)),
        ((0.13357827067375183, -0.1367100477218628, 0.7689454555511475, -0.6100738644599915),
         (-1670.9921875, 5211.98583984375, 1528.387939453125)),
        ((0.5879399180412292, -0.7823407053947449, 0.1427614390850067, -0.14794869720935822),
         (-1696.04345703125, -3827.099853515625, 1591.4127197265625)),
    ),
    "S11": (
        ((0.15232472121715546, -0.15442320704460144, -0.7547563314437866, 0.6191070079803467),
         (2098.440185546875, 4926.5546875, 1500.278564453125)),
        ((0.6189449429512024, -0.7600917220115662, -0.15300633013248444, 0.1255258321762085),
         (2083.182373046875, -4912.1728515625, 1561.07861328125)),
        ((0.14943228662014008, -0.15650227665901184, 0.7681233882904053, -0.6026304364204407),
         (-1609.8153076171875, 5177.3359375, 1537.896728515625)),
        ((0.5894251465797424, -0.7818877100944519, 0.13991211354732513, -0.14715361595153809),
         (-1590.738037109375, -3854.1689453125, 1578.017578125)),
    ),
}

# HumanEva-I: only resolution and azimuth per camera; no intrinsics are published with VideoPose3D.
_HUMANEVA_INTRINSICS = (
    {"id": "C1", "res_w": 640, "res_h": 480, "azimuth": 0},
    {"id": "C2", "res_w": 640, "res_h": 480, "azimuth": -90},
    {"id": "C3", "res_w": 640, "res_h": 480, "azimuth": 90},
)

# HumanEva-I extrinsics per subject and camera (orientation w, x, y, z; translation in mm). S4: none.
_HUMANEVA_EXTRINSICS = {
    "S1": (
        ((0.424207, -0.4983646, -0.5802981, 0.4847012), (4062.227, 663.2477, 1528.397)),
        ((0.6503354, -0.7481602, -0.0919284, 0.0941766), (844.8131, -3805.2092, 1504.9929)),
        ((0.0664734, -0.0690535, 0.7416416, -0.6639132), (-797.67377, 3916.3174, 1433.6602)),
    ),
    "S2": (
        ((0.4214752, -0.4961493, -0.5838273, 0.4851187), (4112.9121, 626.4929, 1545.2988)),
        ((0.6501393, -0.7476588, -0.0954617, 0.0959808), (923.5740, -3877.9243, 1504.5518)),
        ((0.0699353, -0.0712403, 0.7421637, -0.662742), (-781.4915, 3838.8853, 1444.9929)),
    ),
    "S3": (
        ((0.424207, -0.4983646, -0.5802981, 0.4847012), (4062.2271, 663.2477, 1528.3970)),
        ((0.6503354, -0.7481602, -0.0919284, 0.0941766), (844.8131, -3805.2092, 1504.9929)),
        ((0.0664734, -0.0690535, 0.7416416, -0.6639132), (-797.6738, 3916.3174, 1433.6602)),
    ),
    "S4": None,
}

#: Subjects with Human3.6M camera entries (S2-S4 have intrinsics only).
H36M_SUBJECTS = tuple(_H36M_EXTRINSICS)
#: HumanEva-I subjects (S4 has no extrinsics). Keys with the dataset's prefixes
#: ("Train/S1", "Validate/S2", "Unlabeled/Train/S3", ...) are accepted as well.
HUMANEVA_SUBJECTS = tuple(_HUMANEVA_EXTRINSICS)
_HUMANEVA_PREFIXES = ("Unlabeled/Train/", "Unlabeled/Validate/", "Unlabeled/", "Train/", "Validate/")


def _extrinsic_fields(extrinsic) -> dict:
    if extrinsic is None:
        return {}
    orientation, translation_mm = extrinsic
    return {
        "orientation": np.array(orientation, dtype=np.float32),
        # float32 mm / 1000, as the reference converts (translation in metres).
        "translation": np.array(translation_mm, dtype=np.float32) / 1000,
    }


def _lookup(table: dict, subject, dataset: str, key=None):
    if not isinstance(subject, str):
        raise TypeError(f"subject: expected a subject name such as 'S1', got {type(subject).__name__} {subject!r}")
    try:
        return table[subject if key is None else key]
    except KeyError:
        raise KeyError(f"unknown {dataset} subject {subject!r}; known subjects: {list(table)}") from None


def h36m_cameras(subject: str) -> list[dict]:
    """The four Human3.6M cameras of ``subject`` (``"S1"``, ..., ``"S11"``; see :data:`H36M_SUBJECTS`).

    Returns a new list of 4 new dicts (safe to modify), in the order of the dataset files
    (ids 54138969, 55011271, 58860488, 60457274), with:

    * ``id`` (str), ``res_w``, ``res_h`` (int, pixels), ``azimuth`` (float32, degrees, for plots);
    * ``center``, ``focal_length`` (float32 ``(2,)``, **pixels**, as published),
      ``radial_distortion`` ``(3,)`` and ``tangential_distortion`` ``(2,)`` (float32);
    * ``intrinsic`` (float32 ``(9,)``): normalised ``[f, c, k, p]`` computed as the reference
      does (:func:`camera_intrinsics`). Unlike the reference dataset class, which overwrites
      ``center`` and ``focal_length`` with their normalised values, fastlift keeps the pixel values
      in those fields; the normalised ones are in ``intrinsic``.
    * ``orientation`` (float32 ``(4,)``, camera -> world quaternion) and ``translation``
      (float32 ``(3,)``, **metres**, the published mm divided by 1000) for subjects with published
      extrinsics. S2, S3 and S4 have none, and their dicts have no such keys (check with
      ``validate_camera(cam, ("orientation", "translation"))``).

    Raises:
        KeyError: unknown subject (the message lists the known ones).
    """
    extrinsics = _lookup(_H36M_EXTRINSICS, subject, "Human3.6M")
    cams = []
    for i, intr in enumerate(_H36M_INTRINSICS):
        cam = {
            "id": intr["id"],
            "res_w": intr["res_w"],
            "res_h": intr["res_h"],
            "azimuth": np.float32(intr["azimuth"]),
            "center": np.array(intr["center"], dtype=np.float32),
            "focal_length": np.array(intr["focal_length"], dtype=np.float32),
            "radial_distortion": np.array(intr["radial_distortion"], dtype=np.float32),
            "tangential_distortion": np.array(intr["tangential_distortion"], dtype=np.float32),
        }
        cam["intrinsic"] = camera_intrinsics(cam)
        cam.update(_extrinsic_fields(None if extrinsics is None else extrinsics[i]))
        cams.append(cam)
    return cams


def humaneva_cameras(subject: str) -> list[dict]:
    """The three HumanEva-I cameras (C1, C2, C3) of ``subject`` (``"S1"``..``"S4"``).

    Dataset keys with a split prefix (``"Train/S1"``, ``"Validate/S2"``, ``"Unlabeled/Train/S3"``,
    ...) are accepted. Each new dict has ``id``, ``res_w`` = 640, ``res_h`` = 480 (pixels),
    ``azimuth`` (float32 degrees, for plots) and, except for S4, ``orientation`` (float32 ``(4,)``)
    and ``translation`` (float32 ``(3,)``, metres). VideoPose3D publishes no HumanEva-I intrinsics
    (its HumanEva pipeline never projects), so these dicts have no ``center``/``focal_length``/
    distortion/``intrinsic`` fields.

    Raises:
        KeyError: unknown subject (the message lists the known ones).
    """
    name = subject
    if isinstance(subject, str):
        for prefix in _HUMANEVA_PREFIXES:
            if subject.startswith(prefix):
                name = subject[len(prefix):]
                break
    extrinsics = _lookup(_HUMANEVA_EXTRINSICS, subject, "HumanEva-I", key=name)
    cams = []
    for i, intr in enumerate(_HUMANEVA_INTRINSICS):
        cam = {"id": intr["id"], "res_w": intr["res_w"], "res_h": intr["res_h"],
               "azimuth": np.float32(intr["azimuth"])}
        cam.update(_extrinsic_fields(None if extrinsics is None else extrinsics[i]))
        cams.append(cam)
    return cams
