"""Readers, writers, preparation and selection of the VideoPose3D data files (fastlift.data)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from fastlift import data
from fastlift.camera import camera_to_world, h36m_cameras
from fastlift.skeleton import H36M_KEPT_JOINTS

RNG = np.random.default_rng(1234)


# ----------------------------------------------------------------------------- builders
def _positions_3d(subjects=("S1", "S9"), actions=("Walking 1", "Sitting"), frames=(40, 33), joints=32):
    """World coordinates (metres) of a person standing near the origin, float32."""
    out = {}
    for s in subjects:
        out[s] = {}
        for a, t in zip(actions, frames):
            p = RNG.normal(0.0, 0.3, size=(t, joints, 3)).astype(np.float32)
            p[..., 2] += 1.0
            out[s][a] = p
    return out


def _pixels(t, joints=17, w=1000, h=1000):
    return np.stack([RNG.uniform(0, w, size=(t, joints)), RNG.uniform(0, h, size=(t, joints))], -1).astype(np.float32)


def _positions_2d(p3d, cams=4, joints=17, extra=0):
    return {s: {a: [_pixels(p.shape[0] + extra, joints) for _ in range(cams)] for a, p in acts.items()}
            for s, acts in p3d.items()}


def _write_h36m(tmp_path, p3d=None, p2d=None, metadata=None, cameras=None, confidence=None, name="h36m", kp="test"):
    p3d = _positions_3d() if p3d is None else p3d
    p2d = _positions_2d(p3d) if p2d is None else p2d
    f3 = data.save_positions_3d(tmp_path / f"data_3d_{name}.npz", p3d, cameras=cameras)
    f2 = data.save_positions_2d(tmp_path / f"data_2d_{name}_{kp}.npz", p2d,
                                data.H36M_METADATA if metadata is None else metadata, confidence=confidence)
    return f3, f2, p3d, p2d


def _quat_to_matrix(q):
    """Rotation matrix of a unit quaternion (w, x, y, z), written out independently."""
    w, x, y, z = (float(v) for v in q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


# ----------------------------------------------------------------------------- writer / reader
def test_roundtrip_published_layout(tmp_path):
    cams = {"S1": h36m_cameras("S1"), "S9": h36m_cameras("S9")}
    p3d = _positions_3d()
    p2d = _positions_2d(p3d)
    conf = {s: {a: [RNG.uniform(0, 1, size=k.shape[:2]).astype(np.float32) for k in ks] for a, ks in acts.items()}
            for s, acts in p2d.items()}
    f3, f2, _, _ = _write_h36m(tmp_path, p3d, p2d, cameras=cams, confidence=conf)

    # The raw files have exactly the published layout (what VideoPose3D's loaders read).
    raw = np.load(f3, allow_pickle=True)
    assert sorted(raw.files) == ["cameras", "positions_3d"]
    pos = raw["positions_3d"].item()
    assert set(pos) == {"S1", "S9"} and set(pos["S1"]) == {"Walking 1", "Sitting"}
    assert pos["S9"]["Sitting"].dtype == np.float32 and pos["S9"]["Sitting"].shape == (33, 32, 3)
    np.testing.assert_array_equal(pos["S9"]["Sitting"], p3d["S9"]["Sitting"])
    raw2 = np.load(f2, allow_pickle=True)
    assert sorted(raw2.files) == ["confidence", "metadata", "positions_2d"]
    md = raw2["metadata"].item()
    assert md == {"layout_name": "h36m", "num_joints": 17, "keypoints_symmetry": [[4, 5, 6, 11, 12, 13], [1, 2, 3, 14, 15, 16]]}
    kp = raw2["positions_2d"].item()
    assert isinstance(kp["S1"]["Walking 1"], list) and len(kp["S1"]["Walking 1"]) == 4
    np.testing.assert_array_equal(kp["S1"]["Walking 1"][2], p2d["S1"]["Walking 1"][2])

    # And they read back through our readers.
    positions, cameras = data.read_positions_3d(f3)
    np.testing.assert_array_equal(positions["S1"]["Walking 1"], p3d["S1"]["Walking 1"])
    np.testing.assert_allclose(cameras["S9"][3]["translation"], h36m_cameras("S9")[3]["translation"])
    assert "intrinsic" not in cameras["S9"][3]  # derived on load, never stored
    k = data.read_keypoints(f2)
    assert not k.normalized and k.num_joints == 17 and k.keypoints_left == [4, 5, 6, 11, 12, 13]
    np.testing.assert_array_equal(k["S9"]["Sitting"][1], p2d["S9"]["Sitting"][1])
    np.testing.assert_array_equal(k.confidence["S1"]["Sitting"][3], conf["S1"]["Sitting"][3])


def test_writes_are_atomic_and_leave_no_temporaries(tmp_path):
    target = tmp_path / "sub" / "data_3d_x.npz"
    data.save_positions_3d(target, _positions_3d())
    assert os.listdir(target.parent) == ["data_3d_x.npz"]
    before = target.read_bytes()
    bad = _positions_3d()
    bad["S1"]["Sitting"][3, 2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        data.save_positions_3d(target, bad)
    # The old file is untouched and no temporary file is left behind.
    assert target.read_bytes() == before
    assert os.listdir(target.parent) == ["data_3d_x.npz"]


def test_writer_accepts_torch_and_rejects_bad_shapes(tmp_path):
    import torch

    p = data.save_positions_3d(tmp_path / "a.npz", {"S1": {"A": torch.zeros(5, 32, 3, dtype=torch.float64)}})
    assert data.read_positions_3d(p)[0]["S1"]["A"].dtype == np.float32
    with pytest.raises(ValueError, match=r"expected shape \(frames, joints, 3\), got \(5, 32\)"):
        data.save_positions_3d(tmp_path / "b.npz", {"S1": {"A": np.zeros((5, 32))}})
    with pytest.raises(ValueError, match="expected 17 joints, got 16"):
        data.save_positions_2d(tmp_path / "c.npz", {"S1": {"A": [np.zeros((5, 16, 2))]}}, data.H36M_METADATA)
    with pytest.raises(ValueError, match="looks like millimetres"):
        cam = dict(h36m_cameras("S1")[0])
        cam["translation"] = cam["translation"] * 1000
        data.save_positions_3d(tmp_path / "d.npz", {"S1": {"A": np.zeros((5, 32, 3))}}, cameras={"S1": [cam]})


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        data.read_positions_3d(tmp_path / "nope.npz")
    with pytest.raises(FileNotFoundError, match="data_2d_h36m_cpn.npz"):
        data.read_keypoints(tmp_path / "data_2d_h36m_cpn.npz")
    with pytest.raises(FileNotFoundError, match="data_3d_h36m.npz"):
        data.open_dataset("h36m", tmp_path)


def test_missing_keys(tmp_path):
    np.savez_compressed(tmp_path / "no3d.npz", something=np.zeros(3))
    with pytest.raises(KeyError, match="no 'positions_3d' entry") as exc:
        data.read_positions_3d(tmp_path / "no3d.npz")
    assert "something" in str(exc.value)  # lists what is there
    assert isinstance(exc.value, ValueError)  # reported as bad input by the CLI

    obj = np.empty((), dtype=object)
    obj[()] = {"S1": {"A": [np.zeros((4, 17, 2), np.float32)]}}
    np.savez_compressed(tmp_path / "nometa.npz", positions_2d=obj)
    with pytest.raises(KeyError, match="no 'metadata' entry"):
        data.read_keypoints(tmp_path / "nometa.npz")

    md = np.empty((), dtype=object)
    md[()] = {"layout_name": "h36m", "num_joints": 17}
    np.savez_compressed(tmp_path / "badmeta.npz", positions_2d=obj, metadata=md)
    with pytest.raises(KeyError, match="missing key 'keypoints_symmetry'"):
        data.read_keypoints(tmp_path / "badmeta.npz")


def test_not_an_npz(tmp_path):
    (tmp_path / "x.npz").write_text("hello")
    with pytest.raises(ValueError, match="not a readable .npz"):
        data.read_positions_3d(tmp_path / "x.npz")


# ----------------------------------------------------------------------------- preparation
def test_camera_space_is_root_relative_with_trajectory(tmp_path):
    f3, _, p3d, _ = _write_h36m(tmp_path)
    ds = data.Human36mDataset(f3)
    assert ds.skeleton().num_joints == 17 and ds.fps == 50
    world = p3d["S9"]["Walking 1"][:, list(H36M_KEPT_JOINTS)].astype(np.float64)
    np.testing.assert_array_equal(ds.positions("S9", "Walking 1"), world.astype(np.float32))
    for i, cam in enumerate(h36m_cameras("S9")):
        rot = _quat_to_matrix(cam["orientation"])          # camera -> world
        cam_space = (world - cam["translation"].astype(np.float64)) @ rot  # world -> camera: R^T (X - t)
        got = ds.positions_3d("S9", "Walking 1")[i]
        assert got.dtype == np.float32 and got.shape == world.shape
        np.testing.assert_allclose(got[:, 0], cam_space[:, 0], atol=2e-5)                     # trajectory
        np.testing.assert_allclose(got[:, 1:], cam_space[:, 1:] - cam_space[:, :1], atol=2e-5)  # root-relative
        # The trajectory maps back to the world root.
        back = camera_to_world(got[:, 0], R=cam["orientation"], t=cam["translation"])
        np.testing.assert_allclose(back, world[:, 0], atol=5e-5)


def test_normalisation_and_intrinsics(tmp_path):
    f3, f2, _, p2d = _write_h36m(tmp_path)
    ds = data.Human36mDataset(f3)
    kp = data.load_keypoints(f2, ds)
    assert kp.normalized
    raw = p2d["S1"]["Sitting"][0].astype(np.float64)       # camera 0: 1000 x 1002 pixels
    expect = np.stack([raw[..., 0] / 1000 * 2 - 1, raw[..., 1] / 1000 * 2 - 1002 / 1000], -1)
    np.testing.assert_allclose(kp["S1"]["Sitting"][0], expect, atol=1e-6)
    res = data.fetch(ds, kp, ["S1"], action_filter="Sitting")
    assert [lab for lab in res.labels] == [("S1", "Sitting", c) for c in range(4)]
    np.testing.assert_array_equal(res.cameras[2], h36m_cameras("S1")[2]["intrinsic"])
    # fx = f_px / w * 2 for camera 0 of Human3.6M.
    assert res.cameras[0][0] == pytest.approx(1145.0494384765625 / 1000 * 2, rel=1e-6)
    with pytest.raises(ValueError, match="already normalised"):
        data.load_keypoints(kp, ds)
    with pytest.raises(ValueError, match="normalise them"):
        data.fetch(ds, data.read_keypoints(f2), ["S1"])


def test_2d_shorter_than_3d_is_an_error(tmp_path):
    p3d = _positions_3d()
    p2d = _positions_2d(p3d)
    p2d["S9"]["Sitting"][2] = p2d["S9"]["Sitting"][2][:30]  # 3D has 33 frames
    f3, f2, _, _ = _write_h36m(tmp_path, p3d, p2d)
    with pytest.raises(ValueError) as exc:
        data.load_keypoints(f2, data.Human36mDataset(f3))
    msg = str(exc.value)
    for fragment in ("S9/Sitting", "camera 2", "30 frames", "33 frames"):
        assert fragment in msg


def test_2d_longer_than_3d_is_trimmed(tmp_path):
    p3d = _positions_3d()
    p2d = _positions_2d(p3d, extra=7)
    conf = {s: {a: [np.full(k.shape[:2], 0.5, np.float32) for k in ks] for a, ks in acts.items()}
            for s, acts in p2d.items()}
    f3, f2, _, _ = _write_h36m(tmp_path, p3d, p2d, confidence=conf)
    ds = data.Human36mDataset(f3)
    kp = data.load_keypoints(f2, ds)
    for s, acts in p3d.items():
        for a, p in acts.items():
            for c in range(4):
                assert kp[s][a][c].shape == (p.shape[0], 17, 2)
                assert kp.confidence[s][a][c].shape == (p.shape[0], 17)
                # The first frames are kept.
                x = p2d[s][a][c][: p.shape[0], :, 0] / 1000 * 2 - 1
                np.testing.assert_allclose(kp[s][a][c][..., 0], x, atol=1e-6)
    # The caller's Keypoints2D is not modified when passed in memory.
    raw = data.read_keypoints(f2)
    data.load_keypoints(raw, ds)
    assert raw["S1"]["Sitting"][0].shape[0] == 33 + 7 and not raw.normalized


def test_joint_count_errors(tmp_path):
    p3d = _positions_3d()
    p2d = _positions_2d(p3d)
    p2d["S1"]["Walking 1"][3] = _pixels(40, joints=16)
    # Write the malformed 2D file without our writer's checks (as a foreign tool might).
    obj, md = np.empty((), dtype=object), np.empty((), dtype=object)
    obj[()], md[()] = p2d, data.H36M_METADATA
    np.savez_compressed(tmp_path / "bad2d.npz", positions_2d=obj, metadata=md)
    with pytest.raises(ValueError) as exc:
        data.read_keypoints(tmp_path / "bad2d.npz")
    for fragment in ("S1/Walking 1", "camera 3", "16 joints", "num_joints'] is 17"):
        assert fragment in str(exc.value)

    p17 = _positions_3d(joints=17)
    data.save_positions_3d(tmp_path / "data_3d_x.npz", p17)
    with pytest.raises(ValueError, match="expected the 32-joint Human3.6M layout, got 17 joints"):
        data.Human36mDataset(tmp_path / "data_3d_x.npz")
    with pytest.raises(ValueError, match="expected the 15-joint HumanEva layout, got 17 joints"):
        data.HumanEvaDataset(tmp_path / "data_3d_x.npz")


def test_nan_in_keypoints_names_the_place(tmp_path):
    p3d = _positions_3d()
    p2d = _positions_2d(p3d)
    p2d["S9"]["Walking 1"][1][12, 5, 0] = np.nan
    obj, md = np.empty((), dtype=object), np.empty((), dtype=object)
    obj[()], md[()] = p2d, data.H36M_METADATA
    np.savez_compressed(tmp_path / "nan.npz", positions_2d=obj, metadata=md)
    with pytest.raises(ValueError) as exc:
        data.read_keypoints(tmp_path / "nan.npz")
    for fragment in ("NaN", "S9/Walking 1", "camera 1", "frame 12", "joint 5"):
        assert fragment in str(exc.value)


def test_missing_subject_action_and_camera_count(tmp_path):
    p3d = _positions_3d()
    p2d = _positions_2d(p3d)
    del p2d["S9"]
    f3, f2, _, _ = _write_h36m(tmp_path, p3d, p2d)
    ds = data.Human36mDataset(f3)
    with pytest.raises(KeyError, match="subject 'S9' of the h36m dataset is missing"):
        data.load_keypoints(f2, ds)

    p2d = _positions_2d(p3d)
    del p2d["S1"]["Sitting"]
    f3, f2, _, _ = _write_h36m(tmp_path, p3d, p2d)
    with pytest.raises(KeyError, match="action 'Sitting' of subject 'S1' is missing"):
        data.load_keypoints(f2, ds)

    p2d = _positions_2d(p3d)
    p2d["S1"]["Sitting"] = p2d["S1"]["Sitting"][:3]
    f3, f2, _, _ = _write_h36m(tmp_path, p3d, p2d)
    with pytest.raises(ValueError, match=r"S1/Sitting has 3 camera\(s\), the 3D dataset has 4"):
        data.load_keypoints(f2, ds)


def test_unknown_subjects(tmp_path):
    f3, f2, _, _ = _write_h36m(tmp_path)
    ds = data.Human36mDataset(f3)
    kp = data.load_keypoints(f2, ds)
    with pytest.raises(KeyError, match="'S99' is not in the 2D keypoints"):
        data.fetch(ds, kp, "S1,S99")
    with pytest.raises(KeyError, match="no subject 'S5'"):
        ds.positions_3d("S5", "Sitting")
    with pytest.raises(KeyError, match="has no action 'Eating'"):
        ds.positions("S1", "Eating")
    # A subject outside Human3.6M needs cameras in the file.
    data.save_positions_3d(tmp_path / "data_3d_y.npz", _positions_3d(subjects=("P1",)))
    with pytest.raises(KeyError, match="subject 'P1' is not a Human3.6M subject"):
        data.Human36mDataset(tmp_path / "data_3d_y.npz")
    with pytest.raises(ValueError, match="no sequences selected"):
        data.fetch(ds, kp, ["S1"], action_filter="Eating")


def test_cameras_entry_overrides_the_tables(tmp_path):
    cams = h36m_cameras("S1")
    moved = [dict(c) for c in cams]
    for c in moved:
        c["translation"] = c["translation"] + np.float32(0.5)
        c["focal_length"] = c["focal_length"] * np.float32(1.1)
    p3d = _positions_3d(subjects=("S1", "P7"))
    f3, _, _, _ = _write_h36m(tmp_path, p3d, cameras={"S1": moved, "P7": cams})
    ds = data.Human36mDataset(f3)
    np.testing.assert_allclose(ds.cameras("S1")[0]["translation"], moved[0]["translation"])
    assert ds.cameras("S1")[0]["intrinsic"][0] == pytest.approx(cams[0]["intrinsic"][0] * 1.1, rel=1e-6)
    assert "P7" in ds.subjects() and len(ds.cameras("P7")) == 4
    # Subjects without an override keep the published tables.
    np.testing.assert_array_equal(ds.cameras("S9")[1]["translation"], h36m_cameras("S9")[1]["translation"])


# ----------------------------------------------------------------------------- deterministic crop
def test_deterministic_random_hand_computed():
    # sha256("1000") starts with bytes 40 51 01 75 -> little-endian 0x75015140 = 1963020608;
    # 1963020608 / (2**32 - 1) = 0.4570513517...
    assert data.deterministic_random(0, 501, "1000") == 228     # int(0.45705 * 501)
    # sha256("14") starts 85 27 a8 91 -> 0x91a82785 = 2443716485 -> 0.5689720822
    assert data.deterministic_random(0, 11, "14") == 6          # int(6.2587)
    assert data.deterministic_random(5, 16, "14") == 11         # offset by min_value
    # sha256("10") starts 4a 44 dc 15 -> 0x15dc444a = 366756938 -> 0.0853922540
    assert data.deterministic_random(0, 9, "10") == 0


@pytest.mark.parametrize("n, subset, stride, expected", [
    (1000, 0.5, 1, (228, 500)),    # 500 frames, start int(0.45705 * 501)
    (1000, 0.5, 2, (228, 500)),    # round(500 * 0.5) * 2 = 500 frames, same seed string
    (10, 0.25, 1, (0, 2)),         # round(2.5) = 2 (half to even), start int(0.08539 * 9) = 0
    (14, 0.25, 1, (6, 4)),         # round(3.5) = 4, start int(0.56897 * 11) = 6
    (2000, 0.1, 3, (479, 201)),    # 2000 // 3 = 666; round(66.6) * 3 = 201; start int(0.26644 * 1800) = 479
    (500, 0.3, 1, (68, 150)),      # sha256("500") starts 06 04 cd 31 -> 0.19453; int(0.19453 * 351) = 68
    (777, 1.0, 4, (0, 777)),       # subset 1: no crop, only the stride
])
def test_deterministic_crop_hand_computed(n, subset, stride, expected):
    assert data.deterministic_crop(n, subset, stride) == expected


def test_fetch_subset_and_downsample(tmp_path):
    p3d = _positions_3d(subjects=("S1",), actions=("Walking 1", "Waiting"), frames=(1000, 14))
    f3, f2, _, p2d = _write_h36m(tmp_path, p3d)
    ds = data.Human36mDataset(f3)
    kp = data.load_keypoints(f2, ds)
    full = data.fetch(ds, kp, ["S1"])
    res = data.fetch(ds, kp, ["S1"], subset=0.5, downsample=2)
    assert [lab[1] for lab in res.labels] == ["Walking 1"] * 4 + ["Waiting"] * 4
    for i, (s, a, c) in enumerate(res.labels):
        if a == "Walking 1":
            sl = slice(228, 728, 2)    # start 228, 500 frames, every 2nd
            assert res.poses_2d[i].shape[0] == 250
        else:
            # round(14 // 2 * 0.5) * 2 = round(3.5) * 2 = 8 frames; start int(0.56897 * 7) = 3
            sl = slice(3, 11, 2)
            assert res.poses_2d[i].shape[0] == 4
        np.testing.assert_array_equal(res.poses_2d[i], full.poses_2d[i][sl])
        np.testing.assert_array_equal(res.poses_3d[i], full.poses_3d[i][sl])
    only_stride = data.fetch(ds, kp, ["S1"], downsample=3)
    np.testing.assert_array_equal(only_stride.poses_3d[5], full.poses_3d[5][::3])
    with pytest.raises(ValueError, match="subset"):
        data.fetch(ds, kp, ["S1"], subset=0)
    with pytest.raises(ValueError, match="downsample"):
        data.fetch(ds, kp, ["S1"], downsample=0)
    with pytest.raises(ValueError, match="leaves no frames of S1/Waiting"):
        data.fetch(ds, kp, ["S1"], subset=0.01)


def test_action_filter_is_a_prefix_match(tmp_path):
    p3d = _positions_3d(subjects=("S1",), actions=("Walking 1", "WalkDog", "Sitting 2", "Eating"), frames=(5, 6, 7, 8))
    f3, f2, _, _ = _write_h36m(tmp_path, p3d)
    ds = data.Human36mDataset(f3)
    kp = data.load_keypoints(f2, ds)
    acts = lambda f: sorted({lab[1] for lab in data.fetch(ds, kp, "S1", action_filter=f).labels})  # noqa: E731
    assert acts("Walk") == ["WalkDog", "Walking 1"]
    assert acts(["Walking", "Eat"]) == ["Eating", "Walking 1"]
    assert acts("Sitting,Eating") == ["Eating", "Sitting 2"]
    assert acts("*") == acts(None) == ["Eating", "Sitting 2", "WalkDog", "Walking 1"]
    assert data.action_matches("Walking 1", ["Walk"]) and not data.action_matches("Walking 1", ["walk"])


def test_standard_splits():
    assert data.H36M_TRAIN_SUBJECTS == ("S1", "S5", "S6", "S7", "S8")
    assert data.H36M_TEST_SUBJECTS == ("S9", "S11")
    assert data.HUMANEVA_TRAIN_SUBJECTS == ("Train/S1", "Train/S2", "Train/S3")
    assert data.HUMANEVA_TEST_SUBJECTS == ("Validate/S1", "Validate/S2", "Validate/S3")
    assert data.SPLITS["synthetic"] == data.SPLITS["h36m"]


# ----------------------------------------------------------------------------- other datasets
def test_humaneva(tmp_path):
    p3d = _positions_3d(subjects=("Train/S1", "Validate/S2"), actions=("Walking 1 chunk0", "Box 1 chunk2"),
                        frames=(20, 12), joints=15)
    p2d = {s: {a: [_pixels(p.shape[0], 15, 640, 480) for _ in range(3)] for a, p in acts.items()}
           for s, acts in p3d.items()}
    p2d["Unlabeled/S4"] = {"Box 2": [_pixels(9, 15, 640, 480), None, _pixels(9, 15, 640, 480)]}
    data.save_positions_3d(tmp_path / "data_3d_humaneva15.npz", p3d)
    data.save_positions_2d(tmp_path / "data_2d_humaneva15_gt.npz", p2d, data.HUMANEVA15_METADATA)
    ds, kp = data.load("humaneva15", "gt", data_dir=tmp_path)
    assert isinstance(ds, data.HumanEvaDataset) and ds.fps == 60 and ds.skeleton().num_joints == 15
    train = data.fetch(ds, kp, data.HUMANEVA_TRAIN_SUBJECTS[:1])
    assert train.cameras is None          # no HumanEva intrinsics are published
    assert len(train.poses_3d) == 6 and train.poses_3d[0].shape == (20, 15, 3)
    np.testing.assert_allclose(kp["Train/S1"]["Box 1 chunk2"][1][..., 0],
                               p2d["Train/S1"]["Box 1 chunk2"][1][..., 0] / 640 * 2 - 1, atol=1e-6)
    unl = data.fetch(ds, kp, ["Unlabeled/S4"], with_3d=False)
    assert unl.labels == [("Unlabeled/S4", "Box 2", 0), ("Unlabeled/S4", "Box 2", 2)]  # missing camera skipped
    assert unl.poses_3d is None
    with pytest.raises(KeyError, match="no 3D poses"):
        data.fetch(ds, kp, ["Unlabeled/S4"])
    # A labelled sequence without detections for a camera is an error.
    p2d["Train/S1"]["Walking 1 chunk0"][1] = None
    data.save_positions_2d(tmp_path / "data_2d_humaneva15_gt.npz", p2d, data.HUMANEVA15_METADATA)
    with pytest.raises(ValueError, match=r"Train/S1/Walking 1 chunk0 camera 1 has no detections"):
        data.load("humaneva15", "gt", data_dir=tmp_path)


def test_custom_dataset(tmp_path):
    md = dict(data.COCO_METADATA)
    md["video_metadata"] = {"clip_a": {"w": 1920, "h": 1080}, "clip_b": {"w": 720, "h": 1280}}
    p2d = {"clip_a": {"custom": [_pixels(30, 17, 1920, 1080)]}, "clip_b": {"custom": [_pixels(11, 17, 720, 1280)]}}
    path = data.save_positions_2d(tmp_path / "data_2d_custom_myvideos.npz", p2d, md)
    ds, kp = data.load("custom", "myvideos", data_dir=tmp_path)
    assert isinstance(ds, data.CustomDataset) and ds.subjects() == ["clip_a", "clip_b"]
    cam = ds.cameras("clip_b")[0]
    assert (cam["res_w"], cam["res_h"], cam["id"]) == (720, 1280, "clip_b")
    # Principal point at the image centre (normalised: x 0, y 0), focal from the longer side.
    np.testing.assert_allclose(cam["intrinsic"][2:4], [0.0, 0.0], atol=1e-6)
    assert cam["intrinsic"][0] == pytest.approx(1.1472 * 1280 / 720 * 2, rel=1e-5)
    np.testing.assert_array_equal(cam["intrinsic"][4:], np.zeros(5))
    res = data.fetch(ds, kp, ds.subjects(), with_3d=False)
    assert res.labels == [("clip_a", "custom", 0), ("clip_b", "custom", 0)]
    np.testing.assert_allclose(res.poses_2d[1][..., 1], p2d["clip_b"]["custom"][0][..., 1] / 720 * 2 - 1280 / 720,
                               atol=1e-5)
    del md["video_metadata"]
    data.save_positions_2d(path, p2d, md)
    with pytest.raises(KeyError, match="video_metadata"):
        data.CustomDataset(path)


def test_open_dataset_names(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'mpii'"):
        data.open_dataset("mpii", tmp_path)
    with pytest.raises(ValueError, match="pass the keypoints name"):
        data.open_dataset("custom", tmp_path)
    assert data.dataset_path("d", "h36m").as_posix() == "d/data_3d_h36m.npz"
    assert data.keypoints_path("d", "h36m", "cpn_ft_h36m_dbb").as_posix() == "d/data_2d_h36m_cpn_ft_h36m_dbb.npz"


def test_cli_reports_bad_arguments(tmp_path, capsys):
    from fastlift.cli import main

    rc = main(["data", "synth", "--out", str(tmp_path / "o"), "--frames", "10", "--quiet"])
    assert rc == 2
    assert "frames_per_action: expected an integer >= 50" in capsys.readouterr().err
    rc = main(["data", "synth", "--out", str(tmp_path / "o"), "--subjects", "S2", "--quiet"])
    assert rc == 2
    assert "['S2'] are not available" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
