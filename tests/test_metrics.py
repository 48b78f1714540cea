"""Tests of fastlift.metrics: MPJPE family, velocity error, bone lengths and losses."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fastlift import metrics
from fastlift.metrics import (
    bone_length_loss,
    bone_lengths,
    mean_velocity_error,
    mpjpe,
    n_mpjpe,
    p_mpjpe,
    procrustes_align,
    weighted_mpjpe,
)
from fastlift.skeleton import H36M_17

SETTINGS = settings(max_examples=40, deadline=None)
seeds = st.integers(0, 2**31 - 1)

CHAIN = [-1, 0, 1]  # root -> joint 1 -> joint 2


def _random_rotation(rng) -> np.ndarray:
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def _horn_align(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Independent similarity alignment of one (J, 3) frame: Horn's unit-quaternion method.

    The optimal rotation is the quaternion eigenvector of the largest eigenvalue of Horn's 4x4
    matrix; the scale is the least-squares one for that rotation.
    """
    mu_p, mu_t = pred.mean(0), target.mean(0)
    y, x = pred - mu_p, target - mu_t
    s = y.T @ x  # s[a, b] = sum_i y_ia x_ib
    sxx, sxy, sxz = s[0]
    syx, syy, syz = s[1]
    szx, szy, szz = s[2]
    n = np.array([
        [sxx + syy + szz, syz - szy, szx - sxz, sxy - syx],
        [syz - szy, sxx - syy - szz, sxy + syx, szx + sxz],
        [szx - sxz, sxy + syx, -sxx + syy - szz, syz + szy],
        [sxy - syx, szx + sxz, syz + szy, -sxx - syy + szz],
    ])
    vals, vecs = np.linalg.eigh(n)
    w, qx, qy, qz = vecs[:, np.argmax(vals)]
    r = np.array([
        [w * w + qx * qx - qy * qy - qz * qz, 2 * (qx * qy - w * qz), 2 * (qx * qz + w * qy)],
        [2 * (qx * qy + w * qz), w * w - qx * qx + qy * qy - qz * qz, 2 * (qy * qz - w * qx)],
        [2 * (qx * qz - w * qy), 2 * (qy * qz + w * qx), w * w - qx * qx - qy * qy + qz * qz],
    ])
    ry = y @ r.T
    scale = np.sum(x * ry) / np.sum(y * y)
    return scale * ry + mu_t


def _chain_pose(l1: float, l2: float) -> list:
    return [[0.0, 0.0, 0.0], [l1, 0.0, 0.0], [l1, l2, 0.0]]


# ---------------------------------------------------------------------- basics
def test_zero_for_identical_inputs():
    x = torch.randn(2, 5, 17, 3, dtype=torch.float64)
    for fn in (mpjpe, p_mpjpe, n_mpjpe):
        assert float(fn(x, x)) == pytest.approx(0.0, abs=1e-12)
        assert fn(x, x, reduction="none").shape == (2, 5)
    assert float(weighted_mpjpe(x, x, torch.ones(17))) == 0.0
    assert float(mean_velocity_error(x, x, axis=1)) == 0.0
    assert float(bone_length_loss(x, x, H36M_17)) == 0.0


def test_mpjpe_hand_computed():
    pred = np.array([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]],
                     [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]])
    target = np.array([[[0.0, 0.0, 0.0], [1.0, 3.0, 4.0]],
                       [[1.0, 1.0, 2.0], [0.0, 0.0, 0.0]]])
    # Per-joint distances: frame 0: 0 and 5; frame 1: 1 and 0.
    assert mpjpe(pred, target) == pytest.approx(1.5)
    np.testing.assert_allclose(mpjpe(pred, target, reduction="none"), [2.5, 0.5])
    out = mpjpe(torch.from_numpy(pred), torch.from_numpy(target))
    assert isinstance(out, torch.Tensor) and out.ndim == 0 and out.dtype == torch.float64
    assert float(out) == pytest.approx(1.5)
    # 2D keypoints.
    assert mpjpe(pred[..., :2], target[..., :2]) == pytest.approx((0 + 3 + 0 + 0) / 4)


def test_weighted_mpjpe():
    pred = np.array([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]],
                     [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]])
    target = np.array([[[0.0, 0.0, 0.0], [1.0, 3.0, 4.0]],
                       [[1.0, 1.0, 2.0], [0.0, 0.0, 0.0]]])
    # Per-joint weights (J,): (0*1 + 5*2 + 1*1 + 0*2) / 4.
    assert weighted_mpjpe(pred, target, np.array([1.0, 2.0])) == pytest.approx(11 / 4)
    # Per-frame weights (..., 1), as the trajectory loss passes 1 / z: (5*0.5 + 1*4) / 4.
    w = np.array([[0.5], [4.0]])
    assert weighted_mpjpe(pred, target, w) == pytest.approx(6.5 / 4)
    np.testing.assert_allclose(weighted_mpjpe(pred, target, w, reduction="none"), [1.25, 2.0])
    # Unit weights equal MPJPE; a Python scalar works.
    assert weighted_mpjpe(pred, target, 1.0) == pytest.approx(mpjpe(pred, target))
    # Trajectory model layout: one "joint", w = 1 / depth with shape (B, T, 1).
    traj_p = torch.rand(4, 9, 1, 3, dtype=torch.float64)
    traj_t = torch.rand(4, 9, 1, 3, dtype=torch.float64) + 2
    w_t = 1 / traj_t[:, :, :, 2]
    expected = torch.mean(w_t * torch.linalg.vector_norm(traj_p - traj_t, dim=-1))
    torch.testing.assert_close(weighted_mpjpe(traj_p, traj_t, w_t), expected)


def test_weighted_mpjpe_errors():
    p, t = np.zeros((3, 4, 3)), np.ones((3, 4, 3))
    with pytest.raises(ValueError, match="w: weights must be non-negative and not NaN, got negative"):
        weighted_mpjpe(p, t, np.array([1.0, -1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="got NaN"):
        weighted_mpjpe(p, t, np.array([1.0, np.nan, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"w: shape \(5,\) does not broadcast to the per-joint distances of shape "
                                         r"\(3, 4\)"):
        weighted_mpjpe(p, t, np.ones(5))
    with pytest.raises(ValueError, match=r"w: shape \(2, 3, 1\) does not broadcast"):
        weighted_mpjpe(p, t, np.ones((2, 3, 1)))  # would enlarge the result


def test_shape_errors_and_reduction():
    a, b = torch.zeros(2, 17, 3), torch.zeros(2, 16, 3)
    for fn in (mpjpe, p_mpjpe, n_mpjpe, procrustes_align, mean_velocity_error):
        with pytest.raises(ValueError, match=r"pred and target must have the same shape, got pred \(2, 17, 3\) "
                                             r"and target \(2, 16, 3\)"):
            fn(a, b)
    with pytest.raises(ValueError, match=r"pred and target must have the same shape"):
        weighted_mpjpe(a, b, torch.ones(17))
    with pytest.raises(ValueError, match=r"reduction: expected one of \['mean', 'none'\], got 'sum'"):
        mpjpe(a, a, reduction="sum")
    with pytest.raises(ValueError, match=r"pred: expected shape \(\.\.\., joints, coordinates\)"):
        mpjpe(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="pred: empty input"):
        mpjpe(torch.zeros(0, 17, 3), torch.zeros(0, 17, 3))
    with pytest.raises(TypeError, match="target: expected a torch.Tensor or numpy array, got str"):
        mpjpe(a, "x")


def test_torch_and_numpy_agree():
    rng = np.random.default_rng(0)
    p = rng.normal(size=(3, 4, 17, 3))
    t = rng.normal(size=(3, 4, 17, 3))
    w = rng.uniform(0.1, 2, size=(3, 4, 1))
    pt, tt = torch.from_numpy(p), torch.from_numpy(t)
    cases = [
        (mpjpe, (p, t), (pt, tt), {}),
        (weighted_mpjpe, (p, t, w), (pt, tt, torch.from_numpy(w)), {}),
        (p_mpjpe, (p, t), (pt, tt), {}),
        (n_mpjpe, (p, t), (pt, tt), {}),
        (mean_velocity_error, (p, t), (pt, tt), {"axis": 1}),
    ]
    for fn, np_args, t_args, kw in cases:
        r_np = fn(*np_args, **kw)
        assert isinstance(r_np, float)
        r_t = fn(*t_args, **kw)
        assert isinstance(r_t, torch.Tensor) and r_t.ndim == 0
        assert r_np == pytest.approx(float(r_t), rel=1e-12)
        per_np = fn(*np_args, reduction="none", **kw)
        assert isinstance(per_np, np.ndarray)
        np.testing.assert_allclose(per_np, fn(*t_args, reduction="none", **kw).numpy(), rtol=1e-12)
    # Mixed: a numpy target goes to the tensor's dtype; the result is a tensor.
    mixed = mpjpe(pt.float(), t)
    assert isinstance(mixed, torch.Tensor) and mixed.dtype == torch.float32
    assert float(mixed) == pytest.approx(mpjpe(p, t), rel=1e-5)
    # float32 numpy stays close to float64.
    assert p_mpjpe(p.astype(np.float32), t.astype(np.float32)) == pytest.approx(p_mpjpe(p, t), rel=1e-4)


# ---------------------------------------------------------------------- Procrustes
@SETTINGS
@given(seed=seeds, scale=st.floats(0.05, 20.0), shift=st.floats(-5.0, 5.0))
def test_p_mpjpe_invariant_to_similarity_of_prediction(seed, scale, shift):
    rng = np.random.default_rng(seed)
    target = rng.normal(size=(3, 17, 3))
    pred = target + 0.3 * rng.normal(size=(3, 17, 3))
    rot = _random_rotation(rng)
    moved = scale * pred @ rot.T + shift * rng.normal(size=(3, 1, 3))
    base = p_mpjpe(pred, target, reduction="none")
    np.testing.assert_allclose(p_mpjpe(moved, target, reduction="none"), base, rtol=1e-7, atol=1e-9)
    # A similarity transform of the target itself is aligned back exactly.
    exact = scale * target @ rot.T + shift
    assert p_mpjpe(exact, target) == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(procrustes_align(exact, target), target, atol=1e-9)


@SETTINGS
@given(seed=seeds)
def test_procrustes_matches_horn_quaternion_method(seed):
    rng = np.random.default_rng(seed)
    target = rng.normal(size=(4, 17, 3))
    pred = 1.7 * target @ _random_rotation(rng).T + rng.normal(size=(4, 17, 3)) + 3.0
    aligned = procrustes_align(pred, target)
    for i in range(4):
        np.testing.assert_allclose(aligned[i], _horn_align(pred[i], target[i]), rtol=1e-7, atol=1e-8)
    expected = np.mean([np.linalg.norm(_horn_align(pred[i], target[i]) - target[i], axis=-1).mean()
                        for i in range(4)])
    assert p_mpjpe(pred, target) == pytest.approx(expected, rel=1e-9)


def _handedness(pose: np.ndarray) -> np.ndarray:
    """Sign of the volume spanned by the first three edges from joint 0, per frame."""
    edges = pose[..., 1:4, :] - pose[..., :1, :]
    return np.sign(np.linalg.det(edges))


def test_procrustes_never_reflects():
    rng = np.random.default_rng(5)
    target = rng.normal(size=(20, 17, 3))
    mirrored = target * np.array([-1.0, 1.0, 1.0])  # best orthogonal match is a reflection
    aligned = procrustes_align(mirrored, target)
    np.testing.assert_array_equal(_handedness(aligned), _handedness(mirrored))
    assert np.all(p_mpjpe(mirrored, target, reduction="none") > 0.05)
    # Horn's method (rotations only) reaches the same optimum.
    for i in range(3):
        np.testing.assert_allclose(aligned[i], _horn_align(mirrored[i], target[i]), rtol=1e-7, atol=1e-8)


def test_procrustes_batched_dims_2d_dtypes_and_degenerate():
    rng = np.random.default_rng(6)
    target = torch.from_numpy(rng.normal(size=(2, 3, 5, 17, 3)))
    pred = target + 0.2 * torch.from_numpy(rng.normal(size=(2, 3, 5, 17, 3)))
    per = p_mpjpe(pred, target, reduction="none")
    assert per.shape == (2, 3, 5)
    flat = p_mpjpe(pred.reshape(-1, 17, 3), target.reshape(-1, 17, 3), reduction="none")
    torch.testing.assert_close(per.reshape(-1), flat)
    # 2D poses: a rotated, scaled, shifted copy aligns exactly.
    a = np.deg2rad(40)
    rot2 = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    t2 = rng.normal(size=(4, 17, 2))
    assert p_mpjpe(0.5 * t2 @ rot2.T + 2, t2) == pytest.approx(0.0, abs=1e-10)
    # Half precision is aligned in float32 and returned in its dtype.
    for dt in (torch.float16, torch.bfloat16, torch.float32):
        out = procrustes_align(pred.to(dt), target.to(dt))
        assert out.dtype == dt
        assert float(p_mpjpe(pred.to(dt), target.to(dt))) == pytest.approx(float(per.mean()), rel=2e-2)
    # A collapsed prediction (all joints equal) maps to the target centroid instead of NaN.
    collapsed = torch.ones(1, 17, 3, dtype=torch.float64)
    out = procrustes_align(collapsed, target[0, 0, :1])
    torch.testing.assert_close(out, target[0, 0, :1].mean(dim=-2, keepdim=True).expand(1, 17, 3))


@SETTINGS
@given(seed=seeds)
def test_procrustes_least_squares_beats_scale_only(seed):
    """Procrustes minimises the squared error over proper similarities, which include scaling by a
    positive factor (not by a negative one: in 3D that is a point reflection). The mean distance is
    not bounded this way, so p_mpjpe <= n_mpjpe is not asserted; only the RMS bound below holds."""
    rng = np.random.default_rng(seed)
    target = rng.normal(size=(6, 17, 3))
    pred = rng.normal(size=(6, 17, 3)) * rng.uniform(0.2, 3) + target * rng.uniform(0.5, 2)
    aligned = procrustes_align(pred, target)
    scale = np.sum(pred * target, axis=(-2, -1), keepdims=True) / np.sum(pred * pred, axis=(-2, -1), keepdims=True)
    positive = scale[:, 0, 0] > 0
    assert positive.sum() >= 3
    sq_p = np.sum((aligned - target) ** 2, axis=(-2, -1))[positive]
    sq_n = np.sum((scale * pred - target) ** 2, axis=(-2, -1))[positive]
    assert np.all(sq_p <= sq_n * (1 + 1e-9) + 1e-12)
    # Mean distance <= RMS distance after Procrustes <= RMS distance after scale-only alignment.
    assert np.all(p_mpjpe(pred, target, reduction="none")[positive] <= np.sqrt(sq_n / 17) * (1 + 1e-9))


# ---------------------------------------------------------------------- N-MPJPE
@SETTINGS
@given(seed=seeds, scale=st.one_of(st.floats(0.01, 100.0), st.floats(-100.0, -0.01)))
def test_n_mpjpe_invariant_to_scaling_prediction(seed, scale):
    rng = np.random.default_rng(seed)
    target = rng.normal(size=(2, 3, 17, 3))
    pred = target + 0.3 * rng.normal(size=(2, 3, 17, 3))
    np.testing.assert_allclose(n_mpjpe(scale * pred, target, reduction="none"),
                               n_mpjpe(pred, target, reduction="none"), rtol=1e-9, atol=1e-12)
    assert n_mpjpe(scale * target, target) == pytest.approx(0.0, abs=1e-10)


def test_n_mpjpe_hand_computed():
    # One frame, two joints: pred = (1,0,0), (0,1,0); target = (2,0,0), (0,0,1).
    # scale = (2 + 0) / (1 + 1) = 1; distances 1 and sqrt(2).
    pred = np.array([[[1.0, 0, 0], [0, 1.0, 0]]])
    target = np.array([[[2.0, 0, 0], [0, 0, 1.0]]])
    assert n_mpjpe(pred, target) == pytest.approx((1 + np.sqrt(2)) / 2)
    # An all-zero prediction keeps scale 0 (no NaN): the error is the target's mean norm.
    assert n_mpjpe(np.zeros_like(target), target) == pytest.approx(1.5)


# ---------------------------------------------------------------------- velocity
def test_mean_velocity_error():
    rng = np.random.default_rng(7)
    target = rng.normal(size=(10, 17, 3))
    assert mean_velocity_error(target + rng.normal(size=(1, 17, 3)), target) == pytest.approx(0.0, abs=1e-12)
    # One joint moving at 1 unit/frame along x while the target stays still.
    pred = np.array([[[0.0, 0, 0]], [[1.0, 0, 0]], [[2.0, 0, 0]]])
    assert mean_velocity_error(pred, np.zeros_like(pred)) == pytest.approx(1.0)
    np.testing.assert_allclose(mean_velocity_error(pred, np.zeros_like(pred), reduction="none"), [1.0, 1.0])
    # Batched (B, T, J, 3) along axis 1 equals the mean of per-sequence errors (equal lengths).
    pb = rng.normal(size=(4, 6, 17, 3))
    tb = rng.normal(size=(4, 6, 17, 3))
    per_seq = [mean_velocity_error(pb[i], tb[i]) for i in range(4)]
    assert mean_velocity_error(pb, tb, axis=1) == pytest.approx(np.mean(per_seq))
    assert mean_velocity_error(pb, tb, axis=-3) == pytest.approx(np.mean(per_seq))
    assert mean_velocity_error(pb, tb, axis=1, reduction="none").shape == (4, 5)
    assert mean_velocity_error(torch.from_numpy(pb), torch.from_numpy(tb), axis=0, reduction="none").shape == (3, 6)


def test_mean_velocity_error_errors():
    with pytest.raises(ValueError, match="at least 2 frames along axis 0, got 1"):
        mean_velocity_error(np.zeros((1, 17, 3)), np.zeros((1, 17, 3)))
    with pytest.raises(ValueError, match=r"axis: expected a time axis before the joint and coordinate axes"):
        mean_velocity_error(np.zeros((5, 17, 3)), np.zeros((5, 17, 3)), axis=1)
    with pytest.raises(ValueError, match=r"axis: expected a time axis"):
        mean_velocity_error(np.zeros((5, 17, 3)), np.zeros((5, 17, 3)), axis=-2)


# ---------------------------------------------------------------------- bones
def test_bone_lengths():
    pose = np.array([[0.0, 0, 0], [3.0, 4.0, 0], [3.0, 4.0, 12.0]])
    np.testing.assert_allclose(bone_lengths(pose, CHAIN), [5.0, 12.0])
    batch = torch.from_numpy(np.stack([pose, 2 * pose]))[None]
    out = bone_lengths(batch, CHAIN)
    assert isinstance(out, torch.Tensor) and out.shape == (1, 2, 2)
    torch.testing.assert_close(out, torch.tensor([[[5.0, 12.0], [10.0, 24.0]]], dtype=torch.float64))
    # Skeleton objects and a root that is not joint 0.
    assert bone_lengths(torch.randn(2, 3, 17, 3), H36M_17).shape == (2, 3, 16)
    np.testing.assert_allclose(bone_lengths(pose[[1, 0, 2]], [1, -1, 1]), [5.0, 13.0])
    with pytest.raises(ValueError, match="parents: has 3 entries but the poses have 17 joints"):
        bone_lengths(np.zeros((17, 3)), CHAIN)
    with pytest.raises(ValueError, match=r"parents: expected exactly one root \(-1\), got 2"):
        bone_lengths(np.zeros((3, 3)), [-1, -1, 0])
    with pytest.raises(ValueError, match=r"parents\[2\] = 7 is not a valid parent for 3 joints"):
        bone_lengths(np.zeros((3, 3)), [-1, 0, 7])


def test_bone_length_loss_hand_case():
    # Batch a: bone lengths (1, 2) and (3, 4) -> means (2, 3); batch b: (2, 5). Difference (0, -2).
    a = np.array([_chain_pose(1, 2), _chain_pose(3, 4)])
    b = np.array([_chain_pose(2, 5)])
    assert bone_length_loss(a, b, CHAIN, p=1) == pytest.approx(1.0)
    assert bone_length_loss(a, b, CHAIN, p=2) == pytest.approx(2.0)
    assert bone_length_loss(a, b, CHAIN) == pytest.approx(2.0)  # default p=2
    # Leading shapes may differ ((2,) vs (1, 1)); the mean runs over all of them.
    ta = torch.tensor(a)
    tb = torch.tensor(b)[None]
    out = bone_length_loss(ta, tb, CHAIN, p=1)
    assert isinstance(out, torch.Tensor) and out.ndim == 0 and float(out) == pytest.approx(1.0)
    assert float(bone_length_loss(ta, ta.flip(0), CHAIN)) == 0.0
    with pytest.raises(ValueError, match="p: expected 1"):
        bone_length_loss(a, b, CHAIN, p=3)
    with pytest.raises(ValueError, match=r"pos_a and pos_b must have the same \(joints, coordinates\)"):
        bone_length_loss(a, b[..., :2], CHAIN)


# ---------------------------------------------------------------------- gradients
def test_gradients_flow_and_are_finite_at_zero_distance():
    pred = torch.randn(2, 4, 17, 3, requires_grad=True)
    target = torch.randn(2, 4, 17, 3)
    w = torch.rand(2, 4, 1)
    losses = [mpjpe(pred, target), weighted_mpjpe(pred, target, w),
              bone_length_loss(pred[:1], pred[1:], H36M_17), n_mpjpe(pred, target),
              mean_velocity_error(pred, target, axis=1)]
    for loss in losses:
        (g,) = torch.autograd.grad(loss, pred)
        assert torch.isfinite(g).all() and g.abs().sum() > 0
    # Identical inputs: zero distance -> zero, not NaN, gradients.
    same = target.clone().requires_grad_(True)
    for loss in (mpjpe(same, target), weighted_mpjpe(same, target, w), n_mpjpe(same, target)):
        (g,) = torch.autograd.grad(loss, same)
        assert torch.isfinite(g).all()
    collapsed = torch.zeros(2, 3, 3, requires_grad=True)  # zero-length bones
    (g,) = torch.autograd.grad(bone_length_loss(collapsed[:1], collapsed[1:] + 0, CHAIN), collapsed)
    assert torch.isfinite(g).all()


def test_gradcheck_fp64():
    gen = torch.Generator().manual_seed(0)
    pred = torch.randn(2, 3, 5, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    target = torch.randn(2, 3, 5, 3, dtype=torch.float64, generator=gen)
    w = torch.rand(2, 3, 1, dtype=torch.float64, generator=gen).add(0.5).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: mpjpe(p, target), (pred,))
    assert torch.autograd.gradcheck(lambda p: mpjpe(p, target, reduction="none"), (pred,))
    assert torch.autograd.gradcheck(lambda p, ww: weighted_mpjpe(p, target, ww), (pred, w))
    parents = [-1, 0, 1, 0, 3]
    b = torch.randn(4, 5, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    for p in (1, 2):
        assert torch.autograd.gradcheck(lambda x, y: bone_length_loss(x, y, parents, p=p), (pred, b))
    assert torch.autograd.gradcheck(lambda p: n_mpjpe(p, target), (pred,))


def test_module_exports():
    for name in metrics.__all__:
        assert callable(getattr(metrics, name))
