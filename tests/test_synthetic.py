"""The synthetic motion-capture generator (fastlift.data.synthetic) and ``fastlift data synth``."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from fastlift import data
from fastlift.camera import h36m_cameras
from fastlift.data import synthetic as syn
from fastlift.skeleton import H36M_32

SUBJECTS = ("S1", "S9")
FRAMES = 300


@pytest.fixture(scope="module")
def gen():
    """Every motion family for two subjects (one train, one test)."""
    actions = [f"{fam} 1" for fam in syn.FAMILIES] + ["Walking 2"]
    return syn.generate(seed=3, subjects=SUBJECTS, actions=actions, frames_per_action=FRAMES)


def _all_arrays(d):
    for s, acts in d.positions_3d.items():
        for a in acts:
            yield d.positions_3d[s][a]
            yield from d.positions_2d_gt[s][a]
            yield from d.positions_2d_det[s][a]
            yield from d.confidence_det[s][a]


# ----------------------------------------------------------------------------- determinism
def test_same_seed_gives_identical_bytes(gen):
    again = syn.generate(seed=3, subjects=SUBJECTS, actions=list(gen.positions_3d["S1"]), frames_per_action=FRAMES)
    pairs = list(zip(_all_arrays(gen), _all_arrays(again)))
    assert len(pairs) == 2 * 8 * (1 + 3 * 4)
    for x, y in pairs:
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()


def test_different_seeds_differ_and_subsets_are_consistent(gen):
    other = syn.generate(seed=4, subjects=["S9"], actions=["Walking 1"], frames_per_action=FRAMES)
    assert np.abs(other.positions_3d["S9"]["Walking 1"] - gen.positions_3d["S9"]["Walking 1"]).max() > 0.1
    # Each (subject, action) has its own random stream: a subset reproduces those sequences.
    part = syn.generate(seed=3, subjects=["S9"], actions=["Squats 1"], frames_per_action=FRAMES)
    np.testing.assert_array_equal(part.positions_3d["S9"]["Squats 1"], gen.positions_3d["S9"]["Squats 1"])
    np.testing.assert_array_equal(part.positions_2d_det["S9"]["Squats 1"][2], gen.positions_2d_det["S9"]["Squats 1"][2])


def test_layout_and_names(gen):
    assert list(gen.positions_3d) == list(SUBJECTS)
    for s in SUBJECTS:
        for a, w in gen.positions_3d[s].items():
            assert w.shape == (FRAMES, 32, 3) and w.dtype == np.float32
            assert len(gen.positions_2d_gt[s][a]) == 4
            assert gen.positions_2d_gt[s][a][0].shape == (FRAMES, 17, 2)
            assert gen.confidence_det[s][a][0].shape == (FRAMES, 17)
        assert [c["id"] for c in gen.cameras[s]] == [c["id"] for c in h36m_cameras(s)]
    assert gen.metadata == data.H36M_METADATA and gen.fps == 50
    with pytest.raises(ValueError, match="does not name a motion family"):
        syn.generate(actions=["Sitting 1"], frames_per_action=50)
    with pytest.raises(ValueError, match="seed"):
        syn.generate(seed=-1)


# ----------------------------------------------------------------------------- plausibility
def test_bone_lengths_constant_and_subject_specific(gen):
    bones = [(j, p) for j, p in enumerate(H36M_32.parents) if p >= 0]
    child, parent = [b[0] for b in bones], [b[1] for b in bones]
    lengths = {}
    for s in SUBJECTS:
        per_seq = [np.linalg.norm(w[:, child] - w[:, parent], axis=-1) for w in gen.positions_3d[s].values()]
        allf = np.concatenate(per_seq)
        assert allf.std(axis=0).max() < 1e-4, s                       # rigid over time and actions
        np.testing.assert_allclose(allf.mean(axis=0), np.linalg.norm(gen.offsets[s][child], axis=-1), atol=1e-4)
        lengths[s] = allf.mean(axis=0)
    thigh = H36M_32.index("LeftLeg") - 1
    assert 0.38 < lengths["S1"][thigh] < 0.50                          # Human3.6M thigh 443 mm, scaled
    assert abs(lengths["S1"][thigh] - lengths["S9"][thigh]) > 0.005  # different body sizes


def test_feet_on_the_floor(gen):
    feet = list(syn.FOOT_JOINTS)
    for s in SUBJECTS:
        for a, w in gen.positions_3d[s].items():
            low = w[:, feet, 2].min(axis=1)                          # lowest foot joint per frame
            assert low.min() > -1e-3, (s, a)                          # never below the floor
            assert w[:, [3, 8], 2].min() > 0.04, (s, a)               # ankles above it
            near = (low < 0.05).mean()
            if a.startswith(("Jumping", "Jogging")):
                assert near > 0.5, (s, a, near)                       # flight phases only
            else:
                assert near == 1.0, (s, a, near)                      # no floating
            # Upright: the top of the head above the pelvis, the pelvis at hip height or below.
            assert (w[:, 15, 2] > w[:, 0, 2] + 0.3).all()
            assert w[:, 0, 2].max() < 1.6


def test_joint_angles_within_limits(gen):
    lo, hi = np.zeros((32, 3)), np.zeros((32, 3))
    for j, lims in syn.JOINT_LIMITS_DEG.items():
        for k, lim in enumerate(lims):
            if lim is not None:
                lo[j, k], hi[j, k] = np.radians(lim)
    knee_lo, knee_hi = syn.JOINT_LIMITS_DEG[2][0]
    assert (knee_lo, knee_hi) == (0, 150) and syn.JOINT_LIMITS_DEG[18][0] == (0, 150)
    for s in SUBJECTS:
        for a, ang in gen.joint_angles[s].items():
            assert (ang >= lo - 1e-6).all() and (ang <= hi + 1e-6).all(), (s, a)


def test_knees_bend_backwards_and_elbows_stay_in_range(gen):
    for s in SUBJECTS:
        for a, w in gen.positions_3d[s].items():
            left = w[:, 6] - w[:, 1]
            left /= np.linalg.norm(left, axis=-1, keepdims=True)
            for hip, knee, ankle in ((1, 2, 3), (6, 7, 8)):
                thigh, shin = w[:, knee] - w[:, hip], w[:, ankle] - w[:, knee]
                # Bending backwards turns thigh -> shin about the body's left axis (positive).
                bend = np.einsum("ti,ti->t", np.cross(thigh, shin), left)
                assert bend.min() > -0.01 * np.linalg.norm(thigh, axis=-1).mean() ** 2, (s, a)
                cos = np.einsum("ti,ti->t", thigh, shin) / np.linalg.norm(thigh, axis=-1) / np.linalg.norm(shin, axis=-1)
                assert np.degrees(np.arccos(np.clip(cos, -1, 1))).max() <= 150.5       # knee flexion limit
            for sho, elb, wri in ((17, 18, 19), (25, 26, 27)):
                up, fore = w[:, elb] - w[:, sho], w[:, wri] - w[:, elb]
                cos = np.einsum("ti,ti->t", up, fore) / np.linalg.norm(up, axis=-1) / np.linalg.norm(fore, axis=-1)
                assert np.degrees(np.arccos(np.clip(cos, -1, 1))).max() <= 150.5       # elbow flexion limit


def test_motion_is_smooth(gen):
    for s in SUBJECTS:
        for a, w in gen.positions_3d[s].items():
            speed = np.linalg.norm(np.diff(w, axis=0), axis=-1) * syn.FPS       # m/s per joint
            # Fastest real movements here: a jump's arm swing (hand ~12 m/s), punches (~9 m/s).
            assert speed.max() < 15.0, (s, a, speed.max())
            assert np.linalg.norm(np.diff(w[:, 0, :2], axis=0), axis=-1).max() * syn.FPS < 3.5


def test_walking_moves_and_turns(gen):
    for s in SUBJECTS:
        w = gen.positions_3d[s]["Walking 1"]
        path = np.linalg.norm(np.diff(w[:, 0, :2], axis=0), axis=-1).sum()
        assert path / (FRAMES / syn.FPS) > 0.5                            # walking speed, m/s
        hips = w[:, 6, :2] - w[:, 1, :2]
        heading = np.unwrap(np.arctan2(hips[:, 0], -hips[:, 1]))
        assert np.ptp(heading) > np.radians(60)                           # turns
        stand = gen.positions_3d[s]["Waving 1"]
        assert np.ptp(stand[:, 0, :2], axis=0).max() < 0.5                # stationary actions stay put


def test_projections_inside_the_images(gen):
    fractions = []
    for s in SUBJECTS:
        for a in gen.positions_3d[s]:
            for cam, kp in zip(gen.cameras[s], gen.positions_2d_gt[s][a]):
                inside = ((kp[..., 0] >= 0) & (kp[..., 0] < cam["res_w"]) & (kp[..., 1] >= 0)
                          & (kp[..., 1] < cam["res_h"])).all(axis=1)
                fractions.append(inside.mean())
                assert inside.mean() > 0.9, (s, a, cam["id"], inside.mean())
    assert np.mean(fractions) > 0.98


def test_detector_noise_is_a_few_pixels(gen):
    errs, confs = [], []
    for s in SUBJECTS:
        for a in gen.positions_3d[s]:
            for clean, noisy, conf in zip(gen.positions_2d_gt[s][a], gen.positions_2d_det[s][a], gen.confidence_det[s][a]):
                errs.append(np.linalg.norm(noisy - clean, axis=-1))
                confs.append(conf)
    err, conf = np.concatenate(errs), np.concatenate(confs)
    assert 1.5 < err.mean() < 8.0 and 1.0 < np.median(err) < 6.0
    big = err > 20
    assert 0 < big.mean() < 0.02                                          # swaps/outliers: occasional
    assert conf.min() >= 0 and conf.max() <= 1
    assert conf[big].mean() < conf[err < 5].mean() - 0.2                  # scores flag bad keypoints
    # Jitter is temporally correlated (a detector's errors persist over a few frames).
    noise = gen.positions_2d_det["S1"]["Waving 1"][0] - gen.positions_2d_gt["S1"]["Waving 1"][0]
    noise = noise - noise.mean(axis=0)
    lag1 = (noise[1:] * noise[:-1]).sum() / (noise * noise).sum()
    assert 0.3 < lag1 < 0.95


def test_clean_2d_is_the_projection_of_the_3d(tmp_path, gen):
    paths = syn.write(tmp_path, gen)
    ds, kp = data.load("synthetic", "gt", data_dir=tmp_path)
    res = data.fetch(ds, kp, ["S9"], action_filter="Jumping")
    from fastlift.camera import project_to_2d

    for cam, p3, p2 in zip(res.cameras, res.poses_3d, res.poses_2d):
        absolute = p3.astype(np.float64).copy()
        absolute[:, 1:] += absolute[:, :1]
        np.testing.assert_allclose(project_to_2d(absolute, cam.astype(np.float64)), p2, atol=2e-5)
    assert ds.fps == 50 and ds.skeleton().num_joints == 17 and sorted(paths) == ["3d", "det", "gt", "manifest"]


# ----------------------------------------------------------------------------- files, CLI, cache
def test_cli_writes_the_three_files(tmp_path, capsys):
    from fastlift.cli import main

    out = tmp_path / "synth"
    rc = main(["data", "synth", "--out", str(out), "--seed", "7", "--frames", "60", "--subjects", "S1", "S11",
               "--actions", "Walking 1,Jumping 2", "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    for name in ("data_3d_synthetic.npz", "data_2d_synthetic_gt.npz", "data_2d_synthetic_det.npz"):
        assert (out / name).is_file() and str(out / name) in printed
    pos, cams = data.read_positions_3d(out / "data_3d_synthetic.npz")
    assert sorted(pos) == ["S1", "S11"] and sorted(pos["S11"]) == ["Jumping 2", "Walking 1"]
    assert pos["S1"]["Jumping 2"].shape == (60, 32, 3) and len(cams["S11"]) == 4
    det = data.read_keypoints(out / "data_2d_synthetic_det.npz")
    assert det.confidence is not None and det.layout_name == "h36m"
    assert data.read_keypoints(out / "data_2d_synthetic_gt.npz").confidence is None
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 7 and manifest["subjects"] == ["S1", "S11"]
    # The CLI output is the same data as the Python API.
    api = syn.generate(seed=7, subjects=["S1", "S11"], actions=["Walking 1", "Jumping 2"], frames_per_action=60)
    np.testing.assert_array_equal(pos["S11"]["Walking 1"], api.positions_3d["S11"]["Walking 1"])


def test_ensure_synthetic_generates_once(tmp_path, monkeypatch):
    monkeypatch.setattr(syn, "SUBJECTS", ("S1", "S9"))
    monkeypatch.setattr(syn, "DEFAULT_ACTIONS", ("Walking 1", "Squats 1"))
    monkeypatch.setattr(syn, "DEFAULT_FRAMES", 60)
    monkeypatch.setenv("FASTLIFT_DATA", str(tmp_path / "cache"))
    root = syn.ensure_synthetic()
    assert root == tmp_path / "cache"
    assert sorted(p.name for p in root.iterdir()) == ["data_2d_synthetic_det.npz", "data_2d_synthetic_gt.npz",
                                                      "data_3d_synthetic.npz", "manifest.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]        # the temporary directory is gone
    stamp = (root / "data_3d_synthetic.npz").stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("regenerated although the set is complete")

    monkeypatch.setattr(syn, "write", fail)
    assert syn.ensure_synthetic() == root
    assert (root / "data_3d_synthetic.npz").stat().st_mtime_ns == stamp
    monkeypatch.undo()

    # Another seed in an explicit, existing directory regenerates in place.
    monkeypatch.setattr(syn, "SUBJECTS", ("S1", "S9"))
    monkeypatch.setattr(syn, "DEFAULT_ACTIONS", ("Walking 1", "Squats 1"))
    monkeypatch.setattr(syn, "DEFAULT_FRAMES", 60)
    assert syn.ensure_synthetic(root, seed=5) == root
    assert json.loads((root / "manifest.json").read_text())["seed"] == 5
    ds, kp = data.load("synthetic", "det", data_dir=root)
    assert data.fetch(ds, kp, data.H36M_TEST_SUBJECTS[:1]).num_frames == 2 * 4 * 60


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("FASTLIFT_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert syn.default_data_dir() == tmp_path / ".cache" / "fastlift" / "synthetic-v1"
    assert syn.default_data_dir(3).name == "synthetic-v1-seed3"


@pytest.mark.slow
def test_default_set_generation_time():
    start = time.perf_counter()
    d = syn.generate()
    elapsed = time.perf_counter() - start
    assert elapsed < 60
    assert d.num_frames == len(syn.SUBJECTS) * len(syn.DEFAULT_ACTIONS) * syn.DEFAULT_FRAMES


# ----------------------------------------------------------------------------- free-form families
@pytest.fixture(scope="module")
def freeform():
    actions = [f"{fam} {i}" for fam in syn.FREEFORM_FAMILIES for i in (1, 2)]
    return syn.generate(seed=3, subjects=SUBJECTS, actions=actions, frames_per_action=500)


def test_freeform_families_do_not_change_the_scripted_ones(gen):
    # Each (subject, action) has its own random stream: adding families leaves the others' bytes alone.
    mixed = syn.generate(seed=3, subjects=["S1"], actions=["Floor 1", "Walking 1"], frames_per_action=FRAMES)
    np.testing.assert_array_equal(mixed.positions_3d["S1"]["Walking 1"], gen.positions_3d["S1"]["Walking 1"])
    assert set(syn.FREEFORM_FAMILIES).isdisjoint(syn.FAMILIES)
    assert not any(a.split()[0] in syn.FREEFORM_FAMILIES for a in syn.DEFAULT_ACTIONS)


def test_freeform_bodies_are_rigid_within_limits_and_on_the_floor(freeform):
    lo, hi = np.zeros((32, 3)), np.zeros((32, 3))
    for j, lims in syn.JOINT_LIMITS_DEG.items():
        for k, lim in enumerate(lims):
            if lim is not None:
                lo[j, k], hi[j, k] = np.radians(lim)
    for s in SUBJECTS:
        off = freeform.offsets[s]
        for a, w in freeform.positions_3d[s].items():
            ang = freeform.joint_angles[s][a]
            assert (ang >= lo - 1e-6).all() and (ang <= hi + 1e-6).all(), (s, a)
            for j in range(1, 32):
                length = np.linalg.norm(w[:, j] - w[:, H36M_32.parents[j]], axis=-1)
                np.testing.assert_allclose(length, np.linalg.norm(off[j]), atol=1e-4, err_msg=f"{s} {a} joint {j}")
            low = w[..., 2].min(axis=1)
            assert low.min() > -1e-3, (s, a)                  # nothing below the floor
            if not a.startswith(("Acrobatics", "Freestyle")):  # those two jump
                assert (low < 0.1).all(), (s, a)              # touching it (a joint, or the heel below it)
            assert np.abs(np.diff(w, axis=0)).max() < 0.6, (s, a)  # no teleporting (< 30 m/s per axis; flips are fast)


def test_freeform_families_cover_floor_level_and_inverted_poses(freeform):
    pelvis_low, inverted, twist = [], [], []
    for s in SUBJECTS:
        for a, w in freeform.positions_3d[s].items():
            if a.startswith("Floor"):
                pelvis_low.append((w[:, 0, 2] < 0.35).mean())        # sitting / lying / crawling
            if a.startswith("Acrobatics"):
                inverted.append((w[:, 15, 2] < w[:, 0, 2]).mean())  # head below the pelvis
            if a.startswith("Freestyle"):
                twist.append(np.abs(np.degrees(freeform.joint_angles[s][a][:, 11:14, 2]).sum(axis=1)).max())
    assert max(pelvis_low) > 0.15 and np.mean(pelvis_low) > 0.05
    assert max(inverted) > 0.1
    assert max(twist) > 25.0


def test_coco_layout_file(tmp_path):
    paths = syn.write(tmp_path, seed=1, subjects=["S1"], actions=["Freestyle 1"], frames_per_action=60,
                      coco_layout=True)
    kp = data.read_keypoints(paths["detcoco"])
    det = data.read_keypoints(paths["det"])
    a = kp.positions["S1"]["Freestyle 1"][0]
    b = det.positions["S1"]["Freestyle 1"][0]
    np.testing.assert_allclose(a, syn.coco_derived_joints(b))
    assert not np.allclose(a[:, 10], b[:, 10])                        # the head top is rebuilt
