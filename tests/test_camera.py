"""Tests of fastlift.camera: screen normalisation, quaternions, projection, camera tables."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fastlift import camera as cam_mod
from fastlift.camera import (
    H36M_SUBJECTS,
    HUMANEVA_SUBJECTS,
    camera_intrinsics,
    camera_to_world,
    flip_camera_intrinsics,
    h36m_cameras,
    humaneva_cameras,
    image_coordinates,
    normalize_screen_coordinates,
    project_to_2d,
    project_to_2d_linear,
    qinverse,
    qrot,
    validate_camera,
    world_to_camera,
)

SETTINGS = settings(max_examples=40, deadline=None)

unit = st.floats(-1.0, 1.0, allow_nan=False, allow_infinity=False)


def _unit_quaternion(w, x, y, z):
    q = np.array([w, x, y, z], dtype=np.float64)
    n = np.linalg.norm(q)
    if n < 1e-3:
        q = np.array([1.0, 0.0, 0.0, 0.0])
        n = 1.0
    return q / n


def _rotation_matrix(q):
    """Rotation matrix of the unit quaternion (w, x, y, z) (textbook formula)."""
    w, x, y, z = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def _params(f=(1.0, 1.0), c=(0.0, 0.0), k=(0.0, 0.0, 0.0), p=(0.0, 0.0), dtype=np.float64):
    return np.array([*f, *c, *k, *p], dtype=dtype)


# ---------------------------------------------------------------------- screen coordinates
def test_normalize_known_points():
    w, h = 1000, 1002
    px = np.array([[0.0, 0.0], [w, h], [w / 2, h / 2]])
    out = normalize_screen_coordinates(px, w, h)
    np.testing.assert_allclose(out, [[-1, -h / w], [1, h / w], [0, 0]], atol=1e-12)


@SETTINGS
@given(w=st.integers(16, 4096), h=st.integers(16, 4096), seed=st.integers(0, 2**31 - 1))
def test_normalize_image_round_trip(w, h, seed):
    rng = np.random.default_rng(seed)
    px = rng.uniform(-50, 5000, size=(3, 5, 2))
    norm = normalize_screen_coordinates(px, w, h)
    assert isinstance(norm, np.ndarray) and norm.shape == px.shape and norm.dtype == np.float64
    np.testing.assert_allclose(image_coordinates(norm, w, h), px, rtol=1e-12, atol=1e-9)
    t = torch.from_numpy(px).float()
    norm_t = normalize_screen_coordinates(t, w, h)
    assert isinstance(norm_t, torch.Tensor) and norm_t.dtype == torch.float32
    torch.testing.assert_close(image_coordinates(norm_t, w, h), t, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(norm_t.numpy(), norm, rtol=1e-5, atol=1e-5)


def test_normalize_dtypes_and_errors():
    assert normalize_screen_coordinates(np.zeros((4, 2), np.float32), 640, 480).dtype == np.float32
    assert normalize_screen_coordinates(np.zeros((4, 2), np.int64), 640, 480).dtype == np.float64
    assert normalize_screen_coordinates([[320, 240]], 640, 480).tolist() == [[0.0, 0.0]]
    with pytest.raises(ValueError, match=r"X: expected shape \(\.\.\., 2\).*\(4, 3\)"):
        normalize_screen_coordinates(np.zeros((4, 3)), 640, 480)
    with pytest.raises(ValueError, match=r"X: expected shape \(\.\.\., 2\)"):
        image_coordinates(torch.zeros(4, 1), 640, 480)
    with pytest.raises(ValueError, match="w: expected a positive"):
        normalize_screen_coordinates(np.zeros((4, 2)), 0, 480)
    with pytest.raises(TypeError, match="h: expected a positive number"):
        normalize_screen_coordinates(np.zeros((4, 2)), 640, "480")
    with pytest.raises(TypeError, match="X: expected a torch.Tensor"):
        normalize_screen_coordinates("abc", 640, 480)


# ---------------------------------------------------------------------- quaternions
@SETTINGS
@given(q=st.tuples(unit, unit, unit, unit), seed=st.integers(0, 2**31 - 1))
def test_qrot_matches_rotation_matrix(q, seed):
    q = _unit_quaternion(*q)
    v = np.random.default_rng(seed).normal(size=(6, 3))
    expected = v @ _rotation_matrix(q).T
    np.testing.assert_allclose(qrot(q, v), expected, rtol=1e-10, atol=1e-10)
    # Tensors: same result, tensor out.
    out = qrot(torch.from_numpy(q), torch.from_numpy(v))
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10, atol=1e-10)
    # The inverse undoes the rotation.
    np.testing.assert_allclose(qrot(qinverse(q), qrot(q, v)), v, rtol=1e-10, atol=1e-10)


def test_qrot_known_rotation():
    # 90 degrees about z: x -> y.
    q = np.array([math.cos(math.pi / 4), 0, 0, math.sin(math.pi / 4)])
    np.testing.assert_allclose(qrot(q, np.array([1.0, 0, 0])), [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(qinverse(q), [q[0], 0, 0, -q[3]])


def test_qrot_broadcasting():
    rng = np.random.default_rng(0)
    qs = np.stack([_unit_quaternion(*rng.normal(size=4)) for _ in range(5)])
    v = rng.normal(size=(5, 7, 3))
    # One quaternion for all vectors.
    out = qrot(qs[0], v)
    assert out.shape == (5, 7, 3)
    np.testing.assert_allclose(out, v @ _rotation_matrix(qs[0]).T, atol=1e-12)
    # One quaternion per row.
    out = qrot(qs[:, None, :], v)
    for i in range(5):
        np.testing.assert_allclose(out[i], v[i] @ _rotation_matrix(qs[i]).T, atol=1e-12)
    # One vector, many quaternions.
    assert qrot(qs, v[0, 0]).shape == (5, 3)
    with pytest.raises(ValueError, match=r"do not broadcast"):
        qrot(qs, v[:, :4])
    with pytest.raises(ValueError, match=r"q: expected shape \(\.\.\., 4\)"):
        qrot(qs[:, :3], v)
    with pytest.raises(ValueError, match=r"v: expected shape \(\.\.\., 3\)"):
        qrot(qs, v[..., :2])


@SETTINGS
@given(q=st.tuples(unit, unit, unit, unit), t=st.tuples(unit, unit, unit), seed=st.integers(0, 2**31 - 1))
def test_world_camera_round_trip(q, t, seed):
    q = _unit_quaternion(*q)
    t = np.array(t) * 5.0
    x = np.random.default_rng(seed).normal(size=(4, 17, 3))
    cam = world_to_camera(x, q, t)
    np.testing.assert_allclose(camera_to_world(cam, q, t), x, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(world_to_camera(camera_to_world(x, q, t), q, t), x, rtol=1e-10, atol=1e-10)
    # Rigid: distances are preserved.
    np.testing.assert_allclose(np.linalg.norm(cam[:, 1] - cam[:, 0], axis=-1),
                               np.linalg.norm(x[:, 1] - x[:, 0], axis=-1), rtol=1e-10)
    # torch float32 agrees.
    cam32 = world_to_camera(torch.from_numpy(x).float(), torch.from_numpy(q), torch.from_numpy(t))
    assert cam32.dtype == torch.float32
    np.testing.assert_allclose(cam32.numpy(), cam, rtol=1e-4, atol=1e-4)


def test_camera_centre_and_h36m_cameras_face_the_subject():
    for subject in ("S1", "S5", "S9", "S11"):
        for cam in h36m_cameras(subject):
            r, t = cam["orientation"], cam["translation"]
            np.testing.assert_allclose(camera_to_world(np.zeros(3, np.float32), r, t), t, atol=1e-6)
            np.testing.assert_allclose(world_to_camera(t, r, t), np.zeros(3), atol=1e-6)
            # The capture volume's centre (near the world origin) lies 4-7 m in front of each camera
            # and projects inside the image.
            origin = world_to_camera(np.zeros((1, 3), np.float32), r, t)
            assert 4.0 < origin[0, 2] < 7.0
            uv = image_coordinates(project_to_2d(origin[None], cam["intrinsic"][None]), cam["res_w"], cam["res_h"])
            assert 0 < uv[0, 0, 0] < cam["res_w"] and 0 < uv[0, 0, 1] < cam["res_h"]


def test_extrinsic_errors():
    x = np.zeros((5, 3))
    with pytest.raises(ValueError, match=r"R: expected shape \(\.\.\., 4\)"):
        world_to_camera(x, np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match=r"t: expected shape \(\.\.\., 3\)"):
        camera_to_world(x, np.array([1.0, 0, 0, 0]), np.zeros(2))
    with pytest.raises(ValueError, match=r"X: expected shape \(\.\.\., 3\)"):
        camera_to_world(np.zeros((5, 2)), np.array([1.0, 0, 0, 0]), np.zeros(3))


# ---------------------------------------------------------------------- projection
def test_project_hand_computed_radial():
    # u = 1/4, v = 1/2, r2 = 5/16, radial = 1 + 0.1 * 5/16 = 1.03125.
    x = np.array([[1.0, 2.0, 4.0]])
    p = _params(f=(2.0, 2.0), c=(0.5, -0.5), k=(0.1, 0.0, 0.0))
    np.testing.assert_allclose(project_to_2d(x[None], p[None])[0], [[1.015625, 0.53125]], rtol=1e-15)


def test_project_hand_computed_tangential():
    # tan = p1 u + p2 v = 0.125; u' = 0.25 * 1.125 + 0.1 * 0.3125; v' = 0.5 * 1.125 + 0.2 * 0.3125.
    x = np.array([[1.0, 2.0, 4.0]])
    p = _params(p=(0.1, 0.2))
    np.testing.assert_allclose(project_to_2d(x, p), [[0.3125, 0.625]], rtol=1e-15)


def _scalar_projection(point, params):
    """Direct scalar evaluation of the published distortion model for one point."""
    fx, fy, cx, cy, k1, k2, k3, p1, p2 = (float(v) for v in params)
    x, y, z = (float(v) for v in point)
    u = min(max(x / z, -1.0), 1.0)
    v = min(max(y / z, -1.0), 1.0)
    r2 = u * u + v * v
    radial = 1.0 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3
    tan = p1 * u + p2 * v
    return [fx * (u * (radial + tan) + p1 * r2) + cx, fy * (v * (radial + tan) + p2 * r2) + cy]


def test_project_against_scalar_formula_with_h36m_camera():
    intr = h36m_cameras("S9")[2]["intrinsic"].astype(np.float64)
    rng = np.random.default_rng(3)
    pts = np.concatenate([rng.uniform(-2, 2, size=(20, 2)), rng.uniform(2, 6, size=(20, 1))], axis=1)
    pts[0] = [9.0, -1.0, 3.0]  # outside the clamp range along x
    out = project_to_2d(pts[None], intr[None])[0]
    expected = np.array([_scalar_projection(pt, intr) for pt in pts])
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1))
def test_zero_distortion_equals_linear(seed):
    rng = np.random.default_rng(seed)
    z = rng.uniform(1, 10, size=(2, 3, 17, 1))
    xy = rng.uniform(-0.95, 0.95, size=(2, 3, 17, 2)) * z  # inside the clamp range
    x = np.concatenate([xy, z], axis=-1)
    p = np.stack([_params(f=rng.uniform(1, 3, 2), c=rng.uniform(-0.1, 0.1, 2)) for _ in range(2)])
    lin = project_to_2d_linear(x, p)
    np.testing.assert_allclose(project_to_2d(x, p), lin, rtol=1e-12, atol=1e-12)
    # Pinhole by hand.
    np.testing.assert_allclose(lin, p[:, None, None, 0:2] * xy / z + p[:, None, None, 2:4], rtol=1e-12)


def test_linear_projection_clamps_like_the_reference():
    x = np.array([[3.0, -0.5, 1.0], [-2.0, 4.0, 1.0]])
    p = _params(f=(2.0, 3.0), c=(0.1, 0.2))
    np.testing.assert_allclose(project_to_2d_linear(x, p), [[2.1, -1.3], [-1.9, 3.2]], rtol=1e-14)
    # The distorted projection clamps the same normalised coordinates.
    np.testing.assert_allclose(project_to_2d(x, p), [[2.1, -1.3], [-1.9, 3.2]], rtol=1e-14)


def test_projection_batched_shapes_and_broadcasting():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(size=(3, 5, 17, 2)), rng.uniform(3, 6, size=(3, 5, 17, 1))], axis=-1)
    intr = np.stack([c["intrinsic"] for c in h36m_cameras("S1")[:3]]).astype(np.float64)
    out = project_to_2d(x, intr)  # (N, 9) lines up with the first dim of (N, T, J, 3)
    assert out.shape == (3, 5, 17, 2)
    for i in range(3):
        np.testing.assert_allclose(out[i], project_to_2d(x[i], intr[i]), rtol=1e-13)
    # Per-frame parameters (N, T, 9).
    per_frame = np.broadcast_to(intr[:, None, :], (3, 5, 9))
    np.testing.assert_allclose(project_to_2d(x, per_frame), out, rtol=1e-13)
    # One camera (9,) for everything; one pose for several cameras.
    assert project_to_2d(x, intr[0]).shape == (3, 5, 17, 2)
    assert project_to_2d(x[:1], intr).shape == (3, 5, 17, 2)
    with pytest.raises(ValueError, match=r"camera_params of shape \(2, 9\) does not line up with X of shape"):
        project_to_2d(x, intr[:2])
    with pytest.raises(ValueError, match=r"camera_params: expected shape \(\.\.\., 9\).*\(3, 8\)"):
        project_to_2d(x, intr[:, :8])
    with pytest.raises(ValueError, match=r"X: expected shape \(\.\.\., 3\).*\(3, 5, 17, 2\)"):
        project_to_2d_linear(x[..., :2], intr)
    with pytest.raises(ValueError, match="more dimensions than X"):
        project_to_2d(x[0, 0], intr[:, None, None, None, :])


def test_projection_types_dtypes_and_gradients():
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(size=(2, 17, 2)), rng.uniform(3, 6, size=(2, 17, 1))], axis=-1)
    x32 = x.astype(np.float32)
    intr = np.stack([c["intrinsic"] for c in h36m_cameras("S11")[:2]])  # float32
    out_np = project_to_2d(x32, intr)
    assert isinstance(out_np, np.ndarray) and out_np.dtype == np.float32
    xt = torch.from_numpy(x).requires_grad_(True)
    out_t = project_to_2d(xt, intr)  # numpy parameters follow the tensor's dtype
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float64
    np.testing.assert_allclose(out_t.detach().numpy(), out_np, rtol=1e-5, atol=1e-5)
    out_t.sum().backward()
    assert xt.grad is not None and torch.isfinite(xt.grad).all() and xt.grad.abs().sum() > 0
    # gradcheck in fp64 on points well inside the clamp range.
    xg = torch.from_numpy(x * np.array([0.3, 0.3, 1.0])).requires_grad_(True)
    pg = torch.from_numpy(intr.astype(np.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: project_to_2d(a, b), (xg, pg))


def test_flip_camera_intrinsics():
    intr = h36m_cameras("S1")[0]["intrinsic"]
    flipped = flip_camera_intrinsics(intr)
    assert isinstance(flipped, np.ndarray) and flipped.dtype == np.float32
    expected = intr.copy()
    expected[[2, 7]] *= -1
    np.testing.assert_array_equal(flipped, expected)
    np.testing.assert_array_equal(flip_camera_intrinsics(flipped), intr)
    assert intr[2] != 0 and flipped[2] == -intr[2]  # the input is not modified
    # Mirroring a camera-space pose (x -> -x) and projecting with the flipped camera mirrors the
    # projection (u -> -u), distortion included.
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.normal(size=(17, 2)) * 0.5, rng.uniform(3, 6, size=(17, 1))], axis=-1)
    mirrored = x * np.array([-1.0, 1.0, 1.0])
    proj = project_to_2d(x, intr.astype(np.float64))
    proj_flip = project_to_2d(mirrored, flip_camera_intrinsics(intr.astype(np.float64)))
    np.testing.assert_allclose(proj_flip, proj * np.array([-1.0, 1.0]), rtol=1e-12, atol=1e-12)
    # Batched tensors.
    t = torch.from_numpy(np.stack([intr, intr]))
    torch.testing.assert_close(flip_camera_intrinsics(t), torch.from_numpy(np.stack([expected, expected])))
    with pytest.raises(ValueError, match=r"intrinsic: expected shape \(\.\.\., 9\)"):
        flip_camera_intrinsics(np.zeros(8))


# ---------------------------------------------------------------------- camera tables
def test_h36m_table():
    ids = ["54138969", "55011271", "58860488", "60457274"]
    res = [(1000, 1002), (1000, 1000), (1000, 1000), (1000, 1002)]
    assert H36M_SUBJECTS == ("S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8", "S9", "S11")
    for subject in H36M_SUBJECTS:
        cams = h36m_cameras(subject)
        assert len(cams) == 4
        for cam, cid, (w, h) in zip(cams, ids, res):
            assert cam["id"] == cid and (cam["res_w"], cam["res_h"]) == (w, h)
            for key in ("center", "focal_length", "radial_distortion", "tangential_distortion", "intrinsic"):
                assert cam[key].dtype == np.float32
            intr = cam["intrinsic"]
            assert intr.shape == (9,)
            # Documented construction: f / res_w * 2, centre normalised like a screen point.
            np.testing.assert_allclose(intr[0:2], cam["focal_length"].astype(np.float64) / w * 2, rtol=1e-6)
            np.testing.assert_allclose(intr[2:4], cam["center"].astype(np.float64) / w * 2 - [1, h / w], atol=1e-6)
            np.testing.assert_array_equal(intr[4:7], cam["radial_distortion"])
            np.testing.assert_array_equal(intr[7:9], cam["tangential_distortion"])
            np.testing.assert_array_equal(camera_intrinsics(cam), intr)
            # Pixel-valued fields: a ~1145 px focal length near the image centre.
            assert 1140 < cam["focal_length"][0] < 1150 and 500 < cam["center"][0] < 520
            if subject in ("S2", "S3", "S4"):
                assert "orientation" not in cam and "translation" not in cam
            else:
                assert cam["orientation"].dtype == np.float32 and cam["translation"].dtype == np.float32
                assert abs(np.linalg.norm(cam["orientation"]) - 1) < 1e-5
                # Metres: the cameras stand 1.4-1.7 m high, 4-6 m from the centre.
                assert 1.4 < cam["translation"][2] < 1.7
                assert 4.0 < np.linalg.norm(cam["translation"]) < 6.5
    s1 = h36m_cameras("S1")
    np.testing.assert_array_equal(s1[0]["translation"], np.float32([1841.1070556640625, 4955.28466796875,
                                                                     1563.4454345703125]) / 1000)
    np.testing.assert_allclose(s1[0]["intrinsic"][:4], [1145.0494384765625 / 500, 1143.7811279296875 / 500,
                                                        512.54150390625 / 500 - 1, 515.4514770507812 / 500 - 1.002],
                               rtol=1e-6, atol=1e-7)
    # Bit-exact float32 construction: float32 pixels / res_w * 2 in float32, minus the float64 offset,
    # rounded to float32.
    c32 = np.float32([512.54150390625, 515.4514770507812])
    np.testing.assert_array_equal(s1[0]["intrinsic"][2:4], (c32 / 1000 * 2 - np.array([1.0, 1.002])).astype(np.float32))


def test_camera_tables_return_fresh_copies():
    a = h36m_cameras("S5")
    a[0]["intrinsic"][:] = 0
    a[0]["translation"][:] = 0
    b = h36m_cameras("S5")
    assert b[0]["intrinsic"][0] > 2 and b[0]["translation"][0] > 2


def test_unknown_subject():
    with pytest.raises(KeyError, match=r"unknown Human3.6M subject 'S10'; known subjects: \['S1', 'S2'.*'S11'\]"):
        h36m_cameras("S10")
    with pytest.raises(KeyError, match=r"unknown HumanEva-I subject 'Train/S5'; known subjects: \['S1'"):
        humaneva_cameras("Train/S5")
    with pytest.raises(TypeError, match="subject: expected a subject name"):
        h36m_cameras(1)


def test_humaneva_table():
    assert HUMANEVA_SUBJECTS == ("S1", "S2", "S3", "S4")
    for subject in ("S1", "S2", "S3"):
        cams = humaneva_cameras(subject)
        assert [c["id"] for c in cams] == ["C1", "C2", "C3"]
        for c in cams:
            assert (c["res_w"], c["res_h"]) == (640, 480)
            assert abs(np.linalg.norm(c["orientation"]) - 1) < 1e-4
            assert 3.0 < np.linalg.norm(c["translation"]) < 5.0  # metres
    np.testing.assert_array_equal(humaneva_cameras("Validate/S2")[1]["translation"],
                                  np.float32([923.5740, -3877.9243, 1504.5518]) / 1000)
    np.testing.assert_array_equal(humaneva_cameras("Unlabeled/Train/S1")[2]["orientation"],
                                  humaneva_cameras("S1")[2]["orientation"])
    assert [c["azimuth"] for c in humaneva_cameras("S4")] == [0, -90, 90]
    assert "orientation" not in humaneva_cameras("S4")[0]


def test_validate_camera_and_intrinsics_helper():
    raw = {"center": [320.0, 240.0], "focal_length": [640.0, 640.0], "radial_distortion": [0, 0, 0],
           "tangential_distortion": [0, 0], "res_w": 640, "res_h": 480}
    np.testing.assert_allclose(camera_intrinsics(raw), [2, 2, 0, 0, 0, 0, 0, 0, 0], atol=1e-7)
    assert camera_intrinsics(raw).dtype == np.float32
    assert validate_camera(raw) is raw
    with pytest.raises(KeyError, match=r"missing camera field\(s\) \['focal_length', 'res_h'\]"):
        camera_intrinsics({k: v for k, v in raw.items() if k not in ("focal_length", "res_h")})
    with pytest.raises(KeyError, match=r"missing camera field\(s\) \['orientation', 'translation'\]"):
        validate_camera(h36m_cameras("S2")[0], ("orientation", "translation"))
    with pytest.raises(ValueError, match=r"cam\['radial_distortion'\]: expected shape \(3,\), got shape \(2,\)"):
        camera_intrinsics({**raw, "radial_distortion": [0.1, 0.2]})
    with pytest.raises(ValueError, match=r"cam\['res_w'\]: expected a positive integer"):
        camera_intrinsics({**raw, "res_w": 0})
    with pytest.raises(ValueError, match=r"cam\['center'\]: contains NaN"):
        camera_intrinsics({**raw, "center": [float("nan"), 1.0]})
    with pytest.raises(TypeError, match="cam: expected a dict"):
        validate_camera([1, 2, 3])


def test_module_exports():
    for name in cam_mod.__all__:
        assert hasattr(cam_mod, name)
