"""The training stack on the fused Triton path (``--impl triton``; the CPU interpreter here, tiny
sizes) against the reference math: same seed, same batches, same loss curve."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fastlift.train.args import finalize_architecture, parse_args, validate
from fastlift.train.experiment import load_experiment
from fastlift.train.loop import Trainer

from helpers import one_thread_fixture, synthetic_data

pytestmark = pytest.mark.interpreter


one_thread = one_thread_fixture()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return synthetic_data(tmp_path_factory, seed=2, subjects=("S1", "S9"), actions=("Walking 1",), frames_per_action=300)


def trainer(data_dir, ck, impl, *extra):
    a = parse_args(["-d", "synthetic", "--data-dir", str(data_dir), "-str", "S1", "-ste", "S9", "-arc", "3,3",
                    "-ch", "16", "-b", "16", "--impl", impl, "-c", str(ck), "--no-progress", "--no-eval",
                    "--seed", "11", *extra])
    validate(a)
    finalize_architecture(a)
    tr = Trainer(a, load_experiment(a, need_test=False), log=lambda s: None, progress=False)
    tr.record_step_losses = True
    return tr


def curves(data_dir, tmp_path, subset: str):
    out = {}
    for impl in ("reference", "triton"):
        tr = trainer(data_dir, tmp_path / impl, impl, "-drop", "0", "--subset", subset, "-e", "1")
        assert tr.model_pos_train.uses_kernels(torch.zeros(1, 9, 17, 2)) == (impl == "triton")
        tr.fit()
        out[impl] = (np.array(tr.step_losses), tr.model_pos_train.state_dict())
    return out


def _check_curves(out, steps):
    ref, fused = out["reference"][0], out["triton"][0]
    assert len(ref) == len(fused) == steps
    assert ref[-1] < 0.8 * ref[0]  # it learns
    np.testing.assert_allclose(fused, ref, rtol=2e-4)
    for k, v in out["reference"][1].items():
        torch.testing.assert_close(out["triton"][1][k].float(), v.float(), rtol=1e-3, atol=1e-4, msg=k)


def test_fused_and_reference_loss_curves_match(data_dir, tmp_path):
    # 24 frames x 4 cameras x 2 (flips) = 192 examples = 12 steps of 16.
    _check_curves(curves(data_dir, tmp_path, "0.08"), 12)


@pytest.mark.slow
def test_fused_and_reference_loss_curves_match_over_120_steps(data_dir, tmp_path):
    _check_curves(curves(data_dir, tmp_path, "0.8"), 120)


def test_fused_training_with_dropout_learns_and_resumes_exactly(data_dir, tmp_path):
    flags = ("-drop", "0.25", "--subset", "0.02", "-e", "2", "-lr", "0.01", "--checkpoint-frequency", "1")
    full = trainer(data_dir, tmp_path / "full", "triton", *flags)
    full.fit()
    losses = full.step_losses  # 6 frames x 4 cameras x 2 flips = 48 windows: 2 epochs x 3 steps of 16
    assert len(losses) == 6 and np.isfinite(losses).all() and losses[-1] < losses[0]
    # Dropout is active: two training-mode forwards of the same batch differ.
    m = full.model_pos_train.train()
    x = next(full.sampler.epoch()).inputs_2d.clone()
    with torch.no_grad():
        assert not torch.equal(m(x), m(x))
    resumed = trainer(data_dir, tmp_path / "resumed", "triton", *flags)
    from fastlift.train.checkpoint import load_checkpoint

    resumed.load_state_dict(load_checkpoint(tmp_path / "full" / "epoch_1.bin"))
    resumed.fit()
    assert resumed.step_losses == losses[3:]
    a = load_checkpoint(tmp_path / "full" / "epoch_2.bin")
    b = load_checkpoint(tmp_path / "resumed" / "epoch_2.bin")
    for k, v in a["model_pos"].items():
        assert torch.equal(v, b["model_pos"][k]), k
