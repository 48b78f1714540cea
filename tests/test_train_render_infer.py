"""``fastlift render`` (animated 2D / prediction / ground truth) and ``fastlift infer`` (in-the-wild
COCO keypoints -> 3D npz)."""
from __future__ import annotations

import os
import shutil
import stat
import sys

import numpy as np
import pytest

from fastlift import data
from fastlift.cli import main
from fastlift.data.io import COCO_METADATA, H36M_METADATA
from fastlift.skeleton import H36M_17
from fastlift.train.infer import COCO_TO_H36M_DIRECT, coco_to_h36m
from fastlift.train.render import downsample_frames, read_video_frames

from helpers import one_thread_fixture, synthetic_data

PIL = pytest.importorskip("PIL.Image")
pytest.importorskip("matplotlib")


one_thread = one_thread_fixture()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small model trained for one epoch on S1 (h36m-layout detections), its data and checkpoint."""
    d = synthetic_data(tmp_path_factory, seed=4, subjects=("S1", "S9"), actions=("Walking 1", "Waving 1"),
                       frames_per_action=120)
    ck = d / "ck"
    rc = main(["train", "-d", "synthetic", "--data-dir", str(d), "-str", "S1", "-ste", "S9", "-arc", "3,3", "-ch", "32",
               "-e", "1", "-b", "64", "-c", str(ck), "--no-progress", "--no-eval"])
    assert rc == 0
    return d, ck / "epoch_1.bin"


def h36m_to_coco(h):
    """Pseudo COCO keypoints from Human3.6M-layout ones (eyes/ears placed around the nose)."""
    c = np.zeros_like(h)
    for hj, cj in COCO_TO_H36M_DIRECT.items():
        c[..., cj, :] = h[..., hj, :]
    nose = h[..., 9, :]
    for cj, off in ((1, (-4, -5)), (2, (4, -5)), (3, (-9, 0)), (4, (9, 0))):
        c[..., cj, :] = nose + np.array(off, np.float32)
    return c


def test_coco_to_h36m_mapping():
    rng = np.random.default_rng(0)
    coco = rng.standard_normal((5, 17, 2)).astype(np.float32)
    h = coco_to_h36m(coco)
    for hj, cj in COCO_TO_H36M_DIRECT.items():
        np.testing.assert_array_equal(h[:, hj], coco[:, cj])
    pelvis = (coco[:, 11] + coco[:, 12]) / 2
    thorax = (coco[:, 5] + coco[:, 6]) / 2
    np.testing.assert_allclose(h[:, 0], pelvis)
    np.testing.assert_allclose(h[:, 8], thorax)
    np.testing.assert_allclose(h[:, 7], (pelvis + thorax) / 2)
    np.testing.assert_allclose(h[:, 10], coco[:, 0] + 0.95 * (coco[:, 0] - thorax), rtol=1e-6)
    # Left/right stay left/right: the H36M flip pairs map onto COCO flip pairs.
    for l, r in zip(H36M_17.joints_left, H36M_17.joints_right):
        if l in COCO_TO_H36M_DIRECT:
            cl, cr = COCO_TO_H36M_DIRECT[l], COCO_TO_H36M_DIRECT[r]
            assert cl in COCO_METADATA["keypoints_symmetry"][0] and cr in COCO_METADATA["keypoints_symmetry"][1]
    with pytest.raises(ValueError, match="COCO-17"):
        coco_to_h36m(np.zeros((3, 15, 2)))


def test_render_gif_and_export(trained, tmp_path, capsys):
    d, ckpt = trained
    gif, npy = tmp_path / "out.gif", tmp_path / "pred.npy"
    rc = main(["render", "-d", "synthetic", "--data-dir", str(d), "-arc", "3,3", "-ch", "32", "-c", str(ckpt.parent),
               "--evaluate", ckpt.name, "--viz-subject", "S9", "--viz-action", "Waving 1", "--viz-camera", "1",
               "--viz-output", str(gif), "--viz-export", str(npy), "--viz-limit", "6", "--viz-size", "2",
               "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "Rendering..." in out and "Exporting joint positions" in out
    with PIL.open(gif) as im:
        assert im.n_frames == 6 and im.size[0] > 3 * im.size[1] * 0.9  # three panels side by side
    pred = np.load(npy)
    assert pred.shape == (120, 17, 3) and pred.dtype == np.float32
    # The export is the model's test-time-augmented camera-space prediction.
    from fastlift import reference as R
    from fastlift.train.checkpoint import load_checkpoint, load_model_state
    from fastlift.train.evaluate import SequenceSet

    ds, kp = data.load("synthetic", "det", d)
    model = R.TemporalModel(17, 2, 17, [3, 3], channels=32).eval()
    load_model_state(model, load_checkpoint(ckpt)["model_pos"])
    ss = SequenceSet([kp.positions["S9"]["Waving 1"][1]], pad=4, kps_left=kp.keypoints_left,
                     kps_right=kp.keypoints_right)
    want = ss.predict_tta(model, (list(H36M_17.joints_left), list(H36M_17.joints_right))).numpy()
    np.testing.assert_allclose(pred, want, rtol=1e-5, atol=1e-6)

    # Downsampled, no ground truth panel.
    gif2 = tmp_path / "ds.gif"
    rc = main(["render", "-d", "synthetic", "--data-dir", str(d), "-arc", "3,3", "-ch", "32", "-c", str(ckpt.parent),
               "--evaluate", ckpt.name, "--viz-subject", "S9", "--viz-action", "Walking 1", "--viz-output", str(gif2),
               "--viz-limit", "8", "--viz-downsample", "2", "--viz-size", "2", "--viz-no-ground-truth",
               "--no-progress"])
    assert rc == 0
    with PIL.open(gif2) as im:
        assert im.n_frames == 4 and im.size[0] < 2.5 * im.size[1]  # two panels


def test_render_unlabelled_custom_video(trained, tmp_path, capsys):
    d, ckpt = trained
    kp = data.read_keypoints(d / "data_2d_synthetic_det.npz")
    md = dict(H36M_METADATA, video_metadata={"clip.mp4": {"w": 1000, "h": 1002}})
    data.save_positions_2d(tmp_path / "data_2d_custom_clips.npz",
                           {"clip.mp4": {"custom": [kp.positions["S9"]["Walking 1"][0]]}}, md)
    gif = tmp_path / "custom.gif"
    rc = main(["render", "-d", "custom", "-k", "clips", "--data-dir", str(tmp_path), "-arc", "3,3", "-ch", "32",
               "--evaluate", str(ckpt), "--viz-subject", "clip.mp4", "--viz-action", "custom", "--viz-output",
               str(gif), "--viz-limit", "3", "--viz-size", "2", "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "this action is unlabeled" in out
    with PIL.open(gif) as im:
        assert im.n_frames == 3
    rc = main(["evaluate", "-d", "custom", "-k", "clips", "--data-dir", str(tmp_path), "--evaluate", str(ckpt)])
    assert rc == 2 and "has no 3D poses" in capsys.readouterr().err


def test_render_errors(trained, tmp_path, capsys):
    d, ckpt = trained
    argv = ["render", "-d", "synthetic", "--data-dir", str(d), "-arc", "3,3", "-ch", "32", "--evaluate", str(ckpt),
            "--viz-output", str(tmp_path / "o.gif")]
    assert main(argv + ["--viz-subject", "S7", "--viz-action", "Walking 1"]) == 2
    assert "--viz-subject: 'S7' is not in the 2D keypoints" in capsys.readouterr().err
    assert main(argv + ["--viz-subject", "S9", "--viz-action", "Running"]) == 2
    assert "--viz-action: subject 'S9' has no action 'Running'" in capsys.readouterr().err
    assert main(argv + ["--viz-subject", "S9", "--viz-action", "Walking 1", "--viz-camera", "7"]) == 2
    assert "--viz-camera" in capsys.readouterr().err
    from fastlift.train.render import ffmpeg_exe

    argv[-1] = str(tmp_path / "o.mp4")
    rc = main(argv + ["--viz-subject", "S9", "--viz-action", "Walking 1", "--viz-limit", "2"])
    if ffmpeg_exe() is None:  # neither ffmpeg on PATH nor imageio-ffmpeg (the viz extra)
        assert rc == 2 and "needs ffmpeg" in capsys.readouterr().err
    else:
        assert rc == 0 and (tmp_path / "o.mp4").stat().st_size > 0, capsys.readouterr().err


def test_read_video_frames_gif_folder_and_ffmpeg_pipe(tmp_path, monkeypatch):
    frames = [np.full((3, 4, 3), 40 * i, np.uint8) for i in range(5)]
    imgs = [PIL.fromarray(f) for f in frames]
    imgs[0].save(tmp_path / "v.gif", save_all=True, append_images=imgs[1:], duration=40, loop=0)
    got = read_video_frames(tmp_path / "v.gif", skip=1, limit=3)
    assert len(got) == 3 and got[0].shape == (3, 4, 3)
    (tmp_path / "dir").mkdir()
    for i, im in enumerate(imgs):
        im.save(tmp_path / "dir" / f"{i:03d}.png")
    got = read_video_frames(tmp_path / "dir", skip=2)
    assert [int(g[0, 0, 0]) for g in got] == [80, 120, 160]
    # Video files go through ffprobe/ffmpeg (raw RGB frames on a pipe); fake both executables.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "ffprobe").write_text(f"#!{sys.executable}\nprint('4,3')\n")
    (bindir / "ffmpeg").write_text(f"#!{sys.executable}\nimport sys\n"
                                   "for i in range(5):\n    sys.stdout.buffer.write(bytes([10 * i]) * 36)\n")
    for f in bindir.iterdir():
        f.chmod(f.stat().st_mode | stat.S_IEXEC)
    (tmp_path / "clip.mp4").write_bytes(b"\0")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    got = read_video_frames(tmp_path / "clip.mp4", skip=1, limit=2)
    assert [g.shape for g in got] == [(3, 4, 3)] * 2 and [int(g[0, 0, 0]) for g in got] == [10, 20]
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="needs ffmpeg and ffprobe"):
        read_video_frames(tmp_path / "clip.mp4")
    with pytest.raises(FileNotFoundError):
        read_video_frames(tmp_path / "missing.mp4")
    np.testing.assert_array_equal(downsample_frames(np.arange(7.0)[:, None], 2)[:, 0], [0.5, 2.5, 4.5])


def test_infer_coco_keypoints(trained, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # infer writes <input stem>_3d.npz into the current folder
    d, ckpt = trained
    kp = data.read_keypoints(d / "data_2d_synthetic_gt.npz")
    seqs = {"a.mp4": kp.positions["S9"]["Walking 1"][0], "b.mp4": kp.positions["S9"]["Waving 1"][2][:50]}
    md = dict(COCO_METADATA, video_metadata={v: {"w": 1000, "h": 1002} for v in seqs})
    src = tmp_path / "data_2d_custom_wild.npz"
    data.save_positions_2d(src, {v: {"custom": [h36m_to_coco(x)]} for v, x in seqs.items()}, md)
    rc = main(["infer", "--input", str(src), "--evaluate", str(ckpt)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "converted to h36m" in out
    res = np.load(tmp_path / "data_2d_custom_wild_3d.npz", allow_pickle=True)
    pos, meta = res["positions_3d"].item(), res["metadata"].item()
    assert meta["converted"] == "coco-to-h36m" and meta["trajectory"] is False and meta["layout_name"] == "h36m"
    assert pos["a.mp4"]["custom"][0].shape == (120, 17, 3) and pos["b.mp4"]["custom"][0].shape == (50, 17, 3)
    # Consistent with lifting the converted, normalised keypoints directly.
    from fastlift import reference as R
    from fastlift.camera import normalize_screen_coordinates
    from fastlift.train.checkpoint import load_checkpoint, load_model_state
    from fastlift.train.evaluate import SequenceSet

    model = R.TemporalModel(17, 2, 17, [3, 3], channels=32).eval()
    load_model_state(model, load_checkpoint(ckpt)["model_pos"])
    x = coco_to_h36m(normalize_screen_coordinates(h36m_to_coco(seqs["b.mp4"]), w=1000, h=1002))
    ss = SequenceSet([x], pad=4, kps_left=list(H36M_17.joints_left), kps_right=list(H36M_17.joints_right))
    want = ss.predict_tta(model, (list(H36M_17.joints_left), list(H36M_17.joints_right))).numpy()
    np.testing.assert_allclose(pos["b.mp4"]["custom"][0], want, rtol=1e-5, atol=1e-6)

    # A file without video metadata needs --resolution; an unknown layout is refused.
    md2 = dict(COCO_METADATA)
    data.save_positions_2d(tmp_path / "nores.npz", {"v": {"custom": [h36m_to_coco(seqs["b.mp4"])]}}, md2)
    assert main(["infer", "--input", str(tmp_path / "nores.npz"), "--evaluate", str(ckpt)]) == 2
    assert "pass --resolution W H" in capsys.readouterr().err
    assert main(["infer", "--input", str(tmp_path / "nores.npz"), "--evaluate", str(ckpt), "--resolution", "1000",
                 "1002", "--output", str(tmp_path / "o.npz"), "-no-tta"]) == 0
    capsys.readouterr()
    from fastlift.data.io import HUMANEVA15_METADATA

    data.save_positions_2d(tmp_path / "he.npz", {"v": {"c": [np.zeros((20, 15, 2), np.float32)]}},
                           dict(HUMANEVA15_METADATA, video_metadata={"v": {"w": 100, "h": 100}}))
    assert main(["infer", "--input", str(tmp_path / "he.npz"), "--evaluate", str(ckpt)]) == 2
    assert "no conversion between them" in capsys.readouterr().err
