"""Checkpoints: atomic writes, reference-layout cross-loading, safe loading of numpy RNG pickles."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from fastlift import reference as R
from fastlift.cli import main
from fastlift.train.checkpoint import (checkpoint_path, fix_state_dict, load_checkpoint, load_model_state,
                                       save_checkpoint)

from helpers import one_thread_fixture, synthetic_data, write_reference_checkpoint

SUBJECTS = ("S1", "S9")
ACTIONS = ("Walking 1", "Squats 1")


one_thread = one_thread_fixture()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return synthetic_data(tmp_path_factory, seed=1, subjects=SUBJECTS, actions=ACTIONS, frames_per_action=120)


def flags(data_dir, ckdir, *extra):
    return ["train", "-d", "synthetic", "--data-dir", str(data_dir), "-str", "S1", "-ste", "S9", "-arc", "3,3", "-ch", "16",
            "-b", "256", "-c", str(ckdir), "--no-progress", *extra]


def test_save_is_atomic_and_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "epoch_1.bin"
    save_checkpoint(path, {"epoch": 1, "w": torch.ones(3)})
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # what open() would give, not mkstemp's 0600
    real_save = torch.save

    def broken(obj, f, *a, **k):
        f.write(b"partial data")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"epoch": 2, "w": torch.zeros(3)})
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_1.bin"]


def test_reference_checkpoint_with_numpy_rng_loads_safely(tmp_path):
    torch.manual_seed(0)
    model = R.TemporalModelOptimized1f(17, 2, 17, [3, 3], channels=16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=True)
    for legacy in (True, False):
        path = write_reference_checkpoint(tmp_path / f"ref_{legacy}.bin", model, opt, 3, 9e-4, legacy_numpy=legacy)
        with pytest.raises(Exception):  # plain safe loading refuses the numpy objects ...
            torch.load(path, weights_only=True)
        ckpt = load_checkpoint(path)  # ... the allow-list accepts exactly what is needed
        assert isinstance(ckpt["random_state"], np.random.RandomState)
        assert ckpt["random_state"].randint(1000) == np.random.RandomState(1234).randint(1000)
        assert "expand_bn.num_batches_tracked" not in ckpt["model_pos"]
        dilated = R.TemporalModel(17, 2, 17, [3, 3], channels=16)
        load_model_state(dilated, ckpt["model_pos"])  # no num_batches_tracked: filled with zeros
        torch.testing.assert_close(dilated.expand_conv.weight, model.expand_conv.weight, rtol=0, atol=0)
    # The global allow-list is untouched: safe loading still refuses numpy objects elsewhere.
    with pytest.raises(Exception):
        torch.load(tmp_path / "ref_False.bin", weights_only=True)


class _Evil:
    def __reduce__(self):
        return (print, ("this would run arbitrary code",))


def test_untrusted_globals_are_refused_unless_trusted(tmp_path, capsys):
    path = tmp_path / "evil.bin"
    torch.save({"model_pos": {}, "epoch": 1, "payload": _Evil()}, path)
    with pytest.raises(ValueError, match="--trust-checkpoint"):
        load_checkpoint(path)
    assert "arbitrary code" not in capsys.readouterr().out
    assert load_checkpoint(path, trust=True)["epoch"] == 1
    (tmp_path / "junk.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="damaged or not a checkpoint") as e:
        load_checkpoint(tmp_path / "junk.bin")
    assert "--trust-checkpoint" not in str(e.value)  # trusting a damaged file cannot help
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_checkpoint(tmp_path / "missing.bin")
    torch.save([1, 2], tmp_path / "list.bin")
    with pytest.raises(ValueError, match="expected a dict"):
        load_checkpoint(tmp_path / "list.bin")


def test_fix_state_dict_and_mismatch_messages():
    model = R.TemporalModel(17, 2, 17, [3, 3], channels=16)
    sd = {"module." + k: v for k, v in model.state_dict().items() if "num_batches" not in k}
    fixed = fix_state_dict(sd, model)
    assert set(fixed) == set(model.state_dict())
    other = R.TemporalModel(17, 2, 17, [3, 3], channels=32)
    with pytest.raises(ValueError, match=r"does not fit the model built from the flags.*model \(32,\) vs checkpoint \(16,\)"):
        load_model_state(other, model.state_dict())
    assert checkpoint_path("ck", "epoch_3.bin") == checkpoint_path("ck", "epoch_3.bin")
    assert str(checkpoint_path("ck", "epoch_3.bin")) == os.path.join("ck", "epoch_3.bin")


def test_fastlift_checkpoint_layout_and_reference_cross_load(data_dir, tmp_path, capsys):
    ck = tmp_path / "ck"
    assert main(flags(data_dir, ck, "-e", "1", "--no-eval", "--subset", "0.5")) == 0
    capsys.readouterr()
    path = ck / "epoch_1.bin"
    ckpt = load_checkpoint(path)  # safe loading (numpy RandomState allow-listed, as for the reference's files)
    assert {"epoch", "lr", "optimizer", "model_pos", "model_traj", "random_state", "random_state_semi"} <= set(ckpt)
    # What run.py -r does with these keys: ChunkedGenerator.set_random_state(...) then .permutation/.shuffle.
    assert isinstance(ckpt["random_state"], np.random.RandomState) and ckpt["random_state_semi"] is None
    assert sorted(ckpt["random_state"].permutation(5).tolist()) == [0, 1, 2, 3, 4]
    assert isinstance(ckpt["fastlift"]["sampler"], dict)  # fastlift's own sampler state, under its own key
    assert ckpt["epoch"] == 1 and ckpt["lr"] == pytest.approx(0.001 * 0.95) and ckpt["model_traj"] is None
    arch = ckpt["fastlift"]["architecture"]
    assert arch["filter_widths"] == [3, 3] and arch["channels"] == 16 and arch["keypoints_layout"] == "h36m"
    # model_pos loads into the reference models (1f and dilated), strictly.
    for cls in (R.TemporalModel, R.TemporalModelOptimized1f):
        m = cls(17, 2, 17, [3, 3], channels=16)
        m.load_state_dict(ckpt["model_pos"], strict=True)
    # The optimizer state loads into the reference recipe's Adam over the reference model's parameters.
    m = R.TemporalModelOptimized1f(17, 2, 17, [3, 3], channels=16)
    torch.optim.Adam(m.parameters(), lr=1e-3, amsgrad=True).load_state_dict(ckpt["optimizer"])


def test_reference_checkpoint_evaluates_and_fine_tunes(data_dir, tmp_path, capsys):
    torch.manual_seed(0)
    model = R.TemporalModelOptimized1f(17, 2, 17, [3, 3], channels=16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=True)
    x = torch.randn(8, 9, 17, 2)
    opt.zero_grad()
    model(x).abs().mean().backward()
    opt.step()
    ck = tmp_path / "ck"
    ck.mkdir()
    write_reference_checkpoint(ck / "pretrained.bin", model, opt, epoch=3, lr=8e-4)

    # Evaluation (the flags give the architecture, as with run.py).
    assert main(flags(data_dir, ck, "--evaluate", "pretrained.bin", "--output-json", str(tmp_path / "e.json"))) == 0
    out = capsys.readouterr().out
    assert "This model was trained for 3 epochs" in out and "action-wise average" in out
    rep = json.loads((tmp_path / "e.json").read_text())
    # Same number from the reference model and the reference evaluation path.
    from fastlift import data
    from fastlift.train.evaluate import SequenceSet, final_evaluation

    ds, kp = data.load("synthetic", "det", data_dir)
    test = data.fetch(ds, kp, ["S9"])
    ref = R.TemporalModel(17, 2, 17, [3, 3], channels=16).eval()
    load_model_state(ref, model.state_dict())
    ss = SequenceSet(test.poses_2d, test.poses_3d, labels=test.labels, pad=4, kps_left=kp.keypoints_left,
                     kps_right=kp.keypoints_right)
    want = final_evaluation(ss, ref, list(ds.skeleton().joints_left), list(ds.skeleton().joints_right), tta=True)
    assert rep["action_mean"]["mpjpe"] == pytest.approx(want["action_mean"]["mpjpe"], rel=1e-5)
    assert rep["epoch"] == 3

    # Fine-tuning: resume continues at epoch 3 with the reference optimizer state and learning rate.
    assert main(flags(data_dir, ck, "-r", "pretrained.bin", "-e", "4", "--no-eval", "--subset", "0.3")) == 0
    out = capsys.readouterr().out
    assert "[4] time" in out and "lr 0.000800" in out
    ft = load_checkpoint(ck / "epoch_4.bin")
    assert ft["epoch"] == 4 and ft["lr"] == pytest.approx(8e-4 * 0.95)
    steps = [float(s["step"]) for s in ft["optimizer"]["state"].values()]
    assert min(steps) > 1  # continued from the loaded Adam state (1 step) rather than from scratch


def test_evaluate_takes_the_architecture_from_a_fastlift_checkpoint(data_dir, tmp_path, capsys):
    ck = tmp_path / "ck"
    assert main(flags(data_dir, ck, "-e", "1", "--no-eval", "--subset", "0.3", "--causal")) == 0
    capsys.readouterr()
    # No -arc / -ch / --causal: the checkpoint's record rebuilds the model.
    rc = main(["evaluate", "-d", "synthetic", "--data-dir", str(data_dir), "-ste", "S9", "-c", str(ck),
               "--evaluate", "epoch_1.bin", "--output-json", str(tmp_path / "e.json"), "-no-tta"])
    assert rc == 0, capsys.readouterr().err
    rep = json.loads((tmp_path / "e.json").read_text())
    assert (rep["architecture"], rep["channels"], rep["causal"], rep["test_time_augmentation"]) == ("3,3", 16, True,
                                                                                                      False)
    # Explicit flags that contradict the weights are reported clearly.
    rc = main(["evaluate", "-d", "synthetic", "--data-dir", str(data_dir), "-ste", "S9", "-c", str(ck),
               "--evaluate", "epoch_1.bin", "-ch", "32"])
    assert rc == 2 and "does not fit the model built from the flags" in capsys.readouterr().err
