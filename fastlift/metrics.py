"""Pose errors (the MPJPE family) and the losses of VideoPose3D's training.

All functions take torch tensors (any device, floating dtype, batched over arbitrary leading
dimensions) or numpy arrays / nested lists. With numpy-only input a ``'mean'`` reduction returns a
Python float and ``'none'`` a numpy array; otherwise the result is a tensor (a 0-dim tensor for
``'mean'``) that carries gradients. When tensors and numpy arrays are mixed, the arrays are
converted to the first tensor's device and the first floating argument's dtype.

Poses have shape ``(..., J, D)``: ``J`` joints with ``D`` coordinates (3 for 3D poses, 2 for 2D
keypoints). Distances are in the unit of the input (metres for the reference's Human3.6M data;
multiply by 1000 for the millimetres papers report). ``pred`` and ``target`` must have identical
shapes. NaN in poses propagates to the result (it is not checked, to avoid a device sync in
training loops); NaN or negative *weights* are rejected.

Gradients: a Euclidean distance is not differentiable at 0. torch's vector norm uses the
subgradient 0 there, so identical prediction and target give zero (not NaN) gradients for
:func:`mpjpe`, :func:`weighted_mpjpe`, :func:`n_mpjpe`, :func:`mean_velocity_error`, and a
zero-length bone gives zero gradients in :func:`bone_lengths` / :func:`bone_length_loss`.
:func:`p_mpjpe` differentiates through an SVD, whose gradient is undefined for repeated singular
values (e.g. planar or degenerate poses); it is meant for evaluation.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "mpjpe",
    "weighted_mpjpe",
    "p_mpjpe",
    "procrustes_align",
    "n_mpjpe",
    "mean_velocity_error",
    "bone_lengths",
    "bone_length_loss",
]

_REDUCTIONS = ("mean", "none")


# ---------------------------------------------------------------------- input handling
def _to_tensors(*named):
    """Convert ``(value, name)`` pairs to tensors on one device with one floating dtype.

    Returns ``(tensors, numpy_out)``; ``numpy_out`` is True when no argument was a tensor.
    """
    arrays = []
    for value, name in named:
        if isinstance(value, torch.Tensor):
            if value.is_complex():
                raise TypeError(f"{name}: expected a real tensor, got dtype {value.dtype}")
            arrays.append(value)
            continue
        if isinstance(value, (np.ndarray, np.generic, list, tuple, int, float)) and not isinstance(value, bool):
            arr = np.asarray(value)
        else:
            raise TypeError(f"{name}: expected a torch.Tensor or numpy array, got {type(value).__name__}")
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"{name}: expected a real numeric array, got dtype {arr.dtype}")
        if not arr.flags.writeable or not arr.dtype.isnative:
            arr = arr.astype(arr.dtype.newbyteorder("="))  # a writable, native-order copy
        arrays.append(arr)

    tensor_args = [a for a in arrays if isinstance(a, torch.Tensor)]
    numpy_out = not tensor_args
    device = tensor_args[0].device if tensor_args else torch.device("cpu")
    dtype = None
    for a in arrays:
        if isinstance(a, torch.Tensor) and a.is_floating_point():
            dtype = a.dtype
            break
        if isinstance(a, np.ndarray) and a.dtype.kind == "f":
            dtype = torch.from_numpy(np.zeros(0, dtype=a.dtype)).dtype
            break
    if dtype is None:
        dtype = torch.float64 if numpy_out else torch.get_default_dtype()
    out = [(torch.from_numpy(a) if isinstance(a, np.ndarray) else a).to(device=device, dtype=dtype)
           for a in arrays]
    return out, numpy_out


def _poses(pred, target, name_pred="pred", name_target="target"):
    (p, t), numpy_out = _to_tensors((pred, name_pred), (target, name_target))
    if p.shape != t.shape:
        raise ValueError(f"{name_pred} and {name_target} must have the same shape, got {name_pred} "
                         f"{tuple(p.shape)} and {name_target} {tuple(t.shape)}")
    if p.ndim < 2:
        raise ValueError(f"{name_pred}: expected shape (..., joints, coordinates), got shape {tuple(p.shape)}")
    if p.numel() == 0:
        raise ValueError(f"{name_pred}: empty input (shape {tuple(p.shape)}); the error is undefined")
    return p, t, numpy_out


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction: expected one of {list(_REDUCTIONS)}, got {reduction!r}")


def _reduce(per_joint: torch.Tensor, reduction: str, numpy_out: bool):
    """``per_joint`` ``(..., J)`` -> scalar mean or per-frame ``(...,)`` mean over joints."""
    if reduction == "mean":
        out = per_joint.mean()
        return float(out) if numpy_out else out
    out = per_joint.mean(dim=-1)
    return out.detach().cpu().numpy() if numpy_out else out


def _distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(a - b, dim=-1)


# ---------------------------------------------------------------------- MPJPE family
def mpjpe(pred, target, reduction: str = "mean"):
    """Mean per-joint position error (protocol #1): mean Euclidean distance.

    Args:
        pred, target: ``(..., J, D)`` poses of the same shape.
        reduction: ``'mean'`` (default): the mean over joints and all leading dims, a scalar;
            ``'none'``: the per-frame error ``(...,)`` (mean over joints), for per-action tables.

    Returns:
        Scalar tensor / ``(...,)`` tensor (differentiable), or float / numpy array for numpy input.
    """
    _check_reduction(reduction)
    p, t, numpy_out = _poses(pred, target)
    return _reduce(_distance(p, t), reduction, numpy_out)


def weighted_mpjpe(pred, target, w, reduction: str = "mean"):
    """Weighted MPJPE: the mean of ``w * |pred - target|`` over joints and leading dims.

    Args:
        pred, target: ``(..., J, D)`` poses of the same shape.
        w: non-negative weights broadcastable to the per-joint distances ``(..., J)`` without
            enlarging them, e.g. ``(..., 1)`` (the trajectory loss uses ``1 / z`` of the
            ground-truth root depth), ``(J,)`` or a scalar.
        reduction: ``'mean'`` (scalar) or ``'none'`` (per-frame ``(...,)`` mean over joints).

    The weights are checked on every call (one host-device synchronisation on GPU).

    Raises:
        ValueError: shapes differ or do not broadcast, or ``w`` has negative or NaN entries.
    """
    _check_reduction(reduction)
    (p, t, wt), numpy_out = _to_tensors((pred, "pred"), (target, "target"), (w, "w"))
    p, t, _ = _poses(p, t)
    dist = _distance(p, t)
    try:
        shape = torch.broadcast_shapes(tuple(wt.shape), tuple(dist.shape))
    except RuntimeError:
        shape = None
    if shape != dist.shape:
        raise ValueError(f"w: shape {tuple(wt.shape)} does not broadcast to the per-joint distances of shape "
                         f"{tuple(dist.shape)} (pred/target shape {tuple(p.shape)} without the last dim)")
    if not bool(torch.all(wt >= 0)):
        bad = "NaN" if bool(torch.isnan(wt).any()) else "negative"
        raise ValueError(f"w: weights must be non-negative and not NaN, got {bad} values")
    return _reduce(wt * dist, reduction, numpy_out)


def _procrustes(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Align ``p`` ``(..., J, D)`` to ``t`` per frame; returns the aligned ``p``."""
    out_dtype = p.dtype
    if p.dtype in (torch.float16, torch.bfloat16):
        p, t = p.float(), t.float()
    mu_t = t.mean(dim=-2, keepdim=True)
    mu_p = p.mean(dim=-2, keepdim=True)
    t0 = t - mu_t
    p0 = p - mu_p
    norm_t = torch.sqrt(torch.sum(t0 * t0, dim=(-2, -1), keepdim=True))
    norm_p = torch.sqrt(torch.sum(p0 * p0, dim=(-2, -1), keepdim=True))
    # A frame whose joints all coincide has norm 0; dividing by 1 instead keeps its (zero)
    # centred matrix, so its scale becomes 0 and it aligns to the target's centroid (no NaN).
    safe_t = torch.where(norm_t > 0, norm_t, torch.ones_like(norm_t))
    safe_p = torch.where(norm_p > 0, norm_p, torch.ones_like(norm_p))
    t0 = t0 / safe_t
    p0 = p0 / safe_p

    h = t0.transpose(-1, -2) @ p0  # (..., D, D)
    u, s, vh = torch.linalg.svd(h)
    v = vh.transpose(-1, -2)
    r = v @ u.transpose(-1, -2)
    # Proper rotations only: where det(R) = -1, flip the last column of V and the smallest
    # singular value (as the published implementation does), which turns the reflection into
    # the best rotation.
    sign = torch.sign(torch.linalg.det(r))  # (...,)
    flip = torch.ones_like(s)
    flip = torch.cat((flip[..., :-1], sign.unsqueeze(-1)), dim=-1)
    v = v * flip.unsqueeze(-2)
    s = s * flip
    r = v @ u.transpose(-1, -2)

    trace = s.sum(dim=-1)[..., None, None]
    scale = trace * norm_t / safe_p
    shift = mu_t - scale * (mu_p @ r)
    aligned = scale * (p @ r) + shift
    return aligned.to(out_dtype)


def procrustes_align(pred, target):
    """Similarity-align each frame of ``pred`` to ``target`` (the alignment of protocol #2).

    Args:
        pred, target: ``(..., J, D)`` poses of the same shape (``D`` = 3, or 2 for 2D).

    Returns:
        ``(..., J, D)``: ``a * pred @ R + t`` per frame with the least-squares scale ``a >= 0``,
        proper rotation ``R`` (``det R = +1``; reflections are turned into the best rotation via
        the sign of ``det``, as in the published evaluation) and translation ``t``. A frame whose
        predicted joints all coincide maps to the target's centroid. Half-precision inputs are
        aligned in float32 and returned in their own dtype.
    """
    p, t, numpy_out = _poses(pred, target)
    aligned = _procrustes(p, t)
    return aligned.detach().cpu().numpy() if numpy_out else aligned


def p_mpjpe(pred, target, reduction: str = "mean"):
    """Procrustes-aligned MPJPE (protocol #2): :func:`mpjpe` after :func:`procrustes_align`.

    ``pred``, ``target``: ``(..., J, D)``; ``reduction`` as in :func:`mpjpe`. Every frame (all
    leading indices) is aligned on its own.
    """
    _check_reduction(reduction)
    p, t, numpy_out = _poses(pred, target)
    return _reduce(_distance(_procrustes(p, t), t), reduction, numpy_out)


def n_mpjpe(pred, target, reduction: str = "mean"):
    """Scale-normalised MPJPE: per frame, scale ``pred`` by the least-squares factor, then MPJPE.

    The factor is ``sum_j <target_j, pred_j> / sum_j |pred_j|^2`` (no rotation or translation);
    a frame with an all-zero prediction gets factor 0. ``pred``, ``target``: ``(..., J, D)``;
    ``reduction`` as in :func:`mpjpe`. Differentiable.
    """
    _check_reduction(reduction)
    p, t, numpy_out = _poses(pred, target)
    norm_p = torch.sum(p * p, dim=(-2, -1), keepdim=True)
    dot = torch.sum(t * p, dim=(-2, -1), keepdim=True)
    safe = torch.where(norm_p > 0, norm_p, torch.ones_like(norm_p))
    scale = torch.where(norm_p > 0, dot / safe, torch.zeros_like(dot))
    return _reduce(_distance(scale * p, t), reduction, numpy_out)


def mean_velocity_error(pred, target, axis: int = 0, reduction: str = "mean"):
    """Mean per-joint velocity error (MPJVE): MPJPE of the first differences along time.

    Args:
        pred, target: poses of the same shape with a time axis, e.g. ``(T, J, D)`` (``axis=0``,
            the published layout) or ``(B, T, J, D)`` (``axis=1``).
        axis: the time axis; must be a leading axis (not the joint or coordinate axis).
        reduction: ``'mean'`` (scalar) or ``'none'`` (per-step error, the input's leading shape
            with ``T - 1`` steps along ``axis``).

    Velocities are per frame (no division by the frame rate), in the input's unit.

    Raises:
        ValueError: shapes differ, ``axis`` is not a leading axis, or fewer than 2 frames.
    """
    _check_reduction(reduction)
    p, t, numpy_out = _poses(pred, target)
    nd = p.ndim
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"axis: expected an integer, got {type(axis).__name__} {axis!r}")
    a = int(axis) + nd if axis < 0 else int(axis)
    if not (0 <= a < nd - 2):
        raise ValueError(f"axis: expected a time axis before the joint and coordinate axes of pred with shape "
                         f"{tuple(p.shape)} (0 <= axis < {nd - 2} or negative equivalent), got {axis}")
    if p.shape[a] < 2:
        raise ValueError(f"pred: the velocity error needs at least 2 frames along axis {axis}, got {p.shape[a]} "
                         f"(shape {tuple(p.shape)})")
    return _reduce(_distance(torch.diff(p, dim=a), torch.diff(t, dim=a)), reduction, numpy_out)


# ---------------------------------------------------------------------- bone lengths
def _bone_indices(parents, num_joints: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    if hasattr(parents, "parents") and not isinstance(parents, (torch.Tensor, np.ndarray)):
        parents = parents.parents  # a fastlift.skeleton.Skeleton
    if isinstance(parents, torch.Tensor):
        parents = parents.tolist()
    try:
        plist = [int(x) for x in np.asarray(parents).reshape(-1).tolist()]
        if np.asarray(parents).ndim != 1:
            raise ValueError
    except (TypeError, ValueError):
        raise TypeError(f"parents: expected a 1-D sequence of parent indices (root = -1) or a Skeleton, "
                        f"got {parents!r}") from None
    if len(plist) != num_joints:
        raise ValueError(f"parents: has {len(plist)} entries but the poses have {num_joints} joints")
    roots = [j for j, q in enumerate(plist) if q == -1]
    if len(roots) != 1:
        raise ValueError(f"parents: expected exactly one root (-1), got {len(roots)} in {plist}")
    for j, q in enumerate(plist):
        if q != -1 and not (0 <= q < num_joints) or q == j:
            raise ValueError(f"parents[{j}] = {q} is not a valid parent for {num_joints} joints")
    child = [j for j, q in enumerate(plist) if q != -1]
    return (torch.tensor(child, dtype=torch.long, device=device),
            torch.tensor([plist[j] for j in child], dtype=torch.long, device=device))


def _check_positions(pos: torch.Tensor, name: str) -> None:
    if pos.ndim < 2:
        raise ValueError(f"{name}: expected shape (..., joints, coordinates), got shape {tuple(pos.shape)}")


def _bone_lengths(pos: torch.Tensor, parents) -> torch.Tensor:
    child, parent = _bone_indices(parents, pos.shape[-2], pos.device)
    return torch.linalg.vector_norm(pos[..., child, :] - pos[..., parent, :], dim=-1)


def bone_lengths(pos, parents):
    """Length of every bone: distance of each non-root joint to its parent.

    Args:
        pos: ``(..., J, D)`` joint positions.
        parents: ``J`` parent indices with ``-1`` for the (single) root, as in
            :mod:`fastlift.skeleton`, or a :class:`~fastlift.skeleton.Skeleton`.

    Returns:
        ``(..., J - 1)`` lengths, non-root joints in index order, in the unit of ``pos``.
    """
    (p,), numpy_out = _to_tensors((pos, "pos"))
    _check_positions(p, "pos")
    out = _bone_lengths(p, parents)
    return out.detach().cpu().numpy() if numpy_out else out


def bone_length_loss(pos_a, pos_b, parents, p: int = 2):
    """Bone-length consistency term of semi-supervised training.

    The mean length of every bone over all poses of batch ``a`` is compared with the same mean
    over batch ``b`` (in training: labelled vs unlabelled predictions); ``p=2`` gives the mean
    squared difference over bones (fastlift's default), ``p=1`` the mean absolute difference
    (what the published training script uses).

    Args:
        pos_a: ``(..., J, D)`` poses; pos_b: ``(..., J, D)`` poses with the same ``J`` and ``D``
            (leading shapes may differ).
        parents: as in :func:`bone_lengths`.
        p: 1 or 2.

    Returns:
        A scalar tensor (differentiable), or a float for numpy input; squared units for ``p=2``.
    """
    if isinstance(p, bool) or p not in (1, 2):
        raise ValueError(f"p: expected 1 (mean absolute difference) or 2 (mean squared difference), got {p!r}")
    (a, b), numpy_out = _to_tensors((pos_a, "pos_a"), (pos_b, "pos_b"))
    _check_positions(a, "pos_a")
    _check_positions(b, "pos_b")
    if a.shape[-2:] != b.shape[-2:]:
        raise ValueError(f"pos_a and pos_b must have the same (joints, coordinates), got pos_a {tuple(a.shape)} "
                         f"and pos_b {tuple(b.shape)}")
    for name, x in (("pos_a", a), ("pos_b", b)):
        if x.numel() == 0:
            raise ValueError(f"{name}: needs at least one pose, got shape {tuple(x.shape)}")
    la = _bone_lengths(a, parents)
    lb = _bone_lengths(b, parents)
    if la.shape[-1] == 0:
        raise ValueError(f"parents: a skeleton of {a.shape[-2]} joint(s) has no bones; the loss is undefined")
    diff = la.reshape(-1, la.shape[-1]).mean(dim=0) - lb.reshape(-1, lb.shape[-1]).mean(dim=0)
    loss = torch.mean(diff * diff) if p == 2 else torch.mean(torch.abs(diff))
    return float(loss) if numpy_out else loss
