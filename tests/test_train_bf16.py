"""bf16 training on CPU (``--precision bf16``): autocast with fp32 master weights, fp32 BatchNorm
statistics and an fp32 loss; the checkpoint is an ordinary fp32 reference checkpoint."""
from __future__ import annotations

import pytest
import torch

from fastlift import reference as R
from fastlift.train.args import parse_args
from fastlift.train.runner import main as run_main

from helpers import one_thread_fixture, rel_err, synthetic_data

one_thread = one_thread_fixture()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return synthetic_data(tmp_path_factory, seed=0, subjects=("S1", "S9"), actions=("Walking 1", "Squats 1"),
                          frames_per_action=200)


def _train(data_dir, ck, precision):
    argv = ["-d", "synthetic", "--data-dir", str(data_dir), "-c", str(ck), "--no-progress", "-str", "S1", "-ste",
            "S9", "-arc", "3,3", "-ch", "32", "-e", "1", "-b", "128", "--precision", precision, "--device", "cpu"]
    lines = []
    return run_main(parse_args(argv), "train", log=lines.append)


def test_bf16_training_step_checkpoint_loads_in_fp32_and_in_the_reference(data_dir, tmp_path):
    res = _train(data_dir, tmp_path / "bf16", "bf16")
    tr = res["trainer"]
    assert tr.autocast_dtype == torch.bfloat16
    # master weights, BN statistics and the optimizer state stay fp32
    for name, t in tr.model_pos_train.state_dict().items():
        if t.is_floating_point():
            assert t.dtype == torch.float32 and torch.isfinite(t).all(), name
    assert all(s["exp_avg"].dtype == torch.float32 for s in tr.optimizer.state.values())
    h = tr.history
    assert 0 < h["loss_3d_train"][0] < 10 and h["loss_3d_train"][0] == h["loss_3d_train"][0]

    # fastlift's loader: the reference keys hold numpy RandomState objects (run.py -r), allow-listed there
    from fastlift.checkpoint import load_checkpoint

    ckpt = load_checkpoint(tmp_path / "bf16" / "epoch_1.bin")
    sd = ckpt["model_pos"]
    assert all(v.dtype == torch.float32 for v in sd.values() if v.is_floating_point())
    ref = R.TemporalModel(17, 2, 17, [3, 3], channels=32)
    ref.load_state_dict(sd)  # strict: the published model's keys and shapes
    ref.eval()
    import fastlift

    fused = fastlift.TemporalModel(17, 2, 17, [3, 3], channels=32)
    fused.load_state_dict(sd)
    fused.eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 30, 17, 2, generator=g) * 0.3
    with torch.no_grad():
        want = ref(x)
        assert want.dtype == torch.float32 and torch.isfinite(want).all()
        assert rel_err(fused(x), want) < 1e-5
        # the same weights under bf16 autocast stay within bf16 tolerance of fp32
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = ref(x)
        assert low.dtype == torch.bfloat16 and 0 < rel_err(low.float(), want) < 5e-2

    # the per-precision accuracy table of this checkpoint (docs' measurement), as JSON
    import json

    from fastlift.bench.precision_accuracy import main as accuracy_main

    out = tmp_path / "acc.json"
    assert accuracy_main(["--model", str(tmp_path / "bf16" / "epoch_1.bin"), "-arc", "3,3", "-ch", "32",
                          "--data-dir", str(data_dir), "-ste", "S9", "--json", str(out)]) == 0
    tab = json.loads(out.read_text())
    assert set(tab) == {"reference-fp32", "fastlift-fp32", "fastlift-stream-fp32", "fastlift-bf16",
                        "fastlift-stream-bf16"}
    assert tab["fastlift-stream-fp32"]["diff_max_mm"] < 0.01 and abs(tab["fastlift-bf16"]["mpjpe_delta_mm"]) < 5


def test_bf16_loss_tracks_fp32_loss(data_dir, tmp_path):
    """Same seed, same data: the bf16 run's epoch loss is within a few percent of the fp32 run's
    (a wrong autocast path -- e.g. BN statistics in bf16 or a bf16 loss -- drifts much further)."""
    a = _train(data_dir, tmp_path / "fp32", "fp32")["trainer"].history
    b = _train(data_dir, tmp_path / "bf16", "bf16")["trainer"].history
    for key in ("loss_3d_train", "loss_3d_valid"):
        assert abs(b[key][0] - a[key][0]) / a[key][0] < 0.05, (key, a[key], b[key])
    assert b["loss_3d_train"][0] != a["loss_3d_train"][0]  # bf16 really ran
