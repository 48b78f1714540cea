"""Whole-sequence evaluation (fastlift.train.evaluate) on hand-checkable cases."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from fastlift.reference import TemporalModel, lift_sequence
from fastlift.train.evaluate import (SequenceSet, final_evaluation, format_table, mean_pose_baseline,
                                     sequence_errors, summarize, write_json)


class WindowTap(nn.Module):
    """A fake lifter: pose of output t = (u + bias, v, 1) of input frame ``tap`` of its window."""

    def __init__(self, pad: int, tap: int, bias: float = 0.0, zero_root: bool = False):
        super().__init__()
        self.pad, self.tap, self.bias, self.zero_root = pad, tap, bias, zero_root

    def receptive_field(self):
        return 2 * self.pad + 1

    def forward(self, x):
        rf = 2 * self.pad + 1
        t_out = x.shape[1] - rf + 1
        sel = x[:, self.tap:self.tap + t_out]
        out = torch.cat([sel[..., :1] + self.bias, sel[..., 1:2], torch.ones_like(sel[..., :1])], dim=-1)
        if self.zero_root:  # a root-relative lifter predicts the root at the origin
            out = torch.cat([torch.zeros_like(out[:, :, :1]), out[:, :, 1:]], dim=2)
        return out


def test_errors_hand_computed():
    # Two joints: the root (zeroed) and one joint 1 m in front of it.
    t = 4
    gt = np.zeros((t, 2, 3), np.float32)
    gt[:, 1, 2] = 1.0
    pred = gt.copy()
    pred[:, 1, 2] = 1.01  # 10 mm too far: per-frame MPJPE (0 + 10) / 2 = 5 mm; scale fixes it exactly
    seq = torch.zeros(t, dtype=torch.long)
    e = sequence_errors(torch.from_numpy(pred), torch.from_numpy(gt), seq, [t])
    s = summarize(e, [t])
    assert s["mpjpe"] == pytest.approx(5.0, abs=1e-4)
    assert s["n_mpjpe"] == pytest.approx(0.0, abs=1e-4)
    assert s["p_mpjpe"] == pytest.approx(0.0, abs=1e-4)
    assert s["mpjve"] == pytest.approx(0.0, abs=1e-6)
    # A drift of 10 mm per frame along x: velocity error 10/2 = 5 mm per step, MPJPE mean(0,5,10,15)=7.5.
    pred = gt.copy()
    pred[:, 1, 0] = 0.01 * np.arange(t)
    e = sequence_errors(torch.from_numpy(pred), torch.from_numpy(gt), seq, [t])
    s = summarize(e, [t])
    assert s["mpjve"] == pytest.approx(5.0, abs=1e-4)
    assert s["mpjpe"] == pytest.approx(7.5, abs=1e-4)


def test_velocity_never_crosses_sequences_and_weights_by_frames():
    # Sequence 0 (3 frames) has velocity error 5 mm per step, sequence 1 (5 frames) none; the jump
    # between them must not count. MPJVE = (3 * 5 + 5 * 0) / 8.
    gt = np.zeros((8, 2, 3), np.float32)
    gt[:, 1, 2] = 1
    pred = gt.copy()
    pred[:3, 1, 0] = 0.01 * np.arange(3)
    pred[3:, 1, 0] = 0.5
    seq = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1])
    e = sequence_errors(torch.from_numpy(pred), torch.from_numpy(gt), seq, [3, 5])
    assert e["mpjve"] * 1000 == pytest.approx([5.0, 0.0], abs=1e-4)
    assert summarize(e, [3, 5])["mpjve"] == pytest.approx(15 / 8, abs=1e-4)
    # A one-frame sequence has no velocity and is left out of the average.
    e = sequence_errors(torch.from_numpy(pred[:4]), torch.from_numpy(gt[:4]), seq[:4], [3, 1])
    assert math.isnan(e["mpjve"][1]) and summarize(e, [3, 1])["mpjve"] == pytest.approx(5.0, abs=1e-4)


@pytest.mark.parametrize("causal", [False, True])
def test_edge_padding_of_whole_sequences(causal):
    pad = 3
    rng = np.random.default_rng(0)
    seqs = [rng.standard_normal((n, 4, 2)).astype(np.float32) for n in (5, 1, 12)]
    ss = SequenceSet(seqs, pad=pad, causal_shift=pad if causal else 0, kps_left=[1], kps_right=[2])
    # Output t reads window tap 0, i.e. input frame t - pad (symmetric) or t - 2*pad (causal), edge-clamped.
    out = ss.predict(WindowTap(pad, 0), frames_per_call=20).numpy()
    back = 2 * pad if causal else pad
    expected = np.concatenate([s[np.clip(np.arange(len(s)) - back, 0, None)] for s in seqs])
    np.testing.assert_array_equal(out[..., :2], expected)
    out = ss.predict(WindowTap(pad, 2 * pad)).numpy()  # last tap: t + pad (symmetric) or t (causal)
    fwd = 0 if causal else pad
    expected = np.concatenate([s[np.clip(np.arange(len(s)) + fwd, None, len(s) - 1)] for s in seqs])
    np.testing.assert_array_equal(out[..., :2], expected)


@pytest.mark.parametrize("causal", [False, True])
def test_batched_sequences_equal_lift_sequence(causal):
    torch.manual_seed(0)
    model = TemporalModel(5, 2, 4, [3, 3], causal=causal, dropout=0.0, channels=16).eval()
    rng = np.random.default_rng(1)
    seqs = [rng.standard_normal((n, 5, 2)).astype(np.float32) for n in (30, 2, 9, 50)]
    ss = SequenceSet(seqs, pad=4, causal_shift=4 if causal else 0)
    got = ss.predict(model, frames_per_call=40)
    want = torch.cat([lift_sequence(model, torch.from_numpy(s)) for s in seqs])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_test_time_augmentation_hand_computed():
    seqs = [np.array([[[0.2, 0.1], [0.3, 0.0], [0.5, -0.2]]] * 3, np.float32)]
    ss = SequenceSet(seqs, pad=1, kps_left=[1], kps_right=[2])
    model = WindowTap(1, 1, bias=0.1)  # x + 0.1: the flip cancels the bias
    plain = ss.predict_tta(model, ([1], [2]), tta=False).numpy()
    np.testing.assert_allclose(plain[0, :, 0], [0.3, 0.4, 0.6], atol=1e-6)
    tta = ss.predict_tta(model, ([1], [2]), tta=True).numpy()
    np.testing.assert_allclose(tta[0, :, 0], [0.2, 0.3, 0.5], atol=1e-6)
    np.testing.assert_allclose(tta[0, :, 1], [0.1, 0.0, -0.2], atol=1e-6)
    # No output swap (the trajectory model's mode): joint 0 is unaffected by the keypoint swap; joints 1
    # and 2 are not swapped back, so each averages its own x + 0.1 with the other's mirrored-back x - 0.1:
    # (0.3 + 0.1 + 0.5 - 0.1) / 2 = 0.4 for both.
    tta = ss.predict_tta(model, None, tta=True).numpy()
    np.testing.assert_allclose(tta[0, :, 0], [0.2, 0.4, 0.4], atol=1e-6)


def test_final_evaluation_groups_actions_and_subjects():
    # Joint 1 of the prediction is off by a known distance per sequence; the model copies the 2D input.
    seqs_2d, seqs_3d, labels = [], [], []
    offsets = {("S9", "Walking 1"): 0.010, ("S9", "Walking 2"): 0.030, ("S11", "Walking 1"): 0.020,
               ("S9", "Sitting"): 0.040}
    lengths = {("S9", "Walking 1"): 4, ("S9", "Walking 2"): 2, ("S11", "Walking 1"): 6, ("S9", "Sitting"): 3}
    for key, off in offsets.items():
        n = lengths[key]
        x = np.zeros((n, 2, 2), np.float32)
        x[:, 1, 0] = off
        y = np.zeros((n, 2, 3), np.float32)
        y[:, 1, 2] = 1.0
        seqs_2d.append(x)
        seqs_3d.append(y)
        labels.append((key[0], key[1], 0))
    ss = SequenceSet(seqs_2d, seqs_3d, labels=labels, pad=1, kps_left=[], kps_right=[])
    rep = final_evaluation(ss, WindowTap(1, 1, zero_root=True), [], [], tta=False, by_subject=True)
    # Per-frame MPJPE = offset / 2 (root exact). Walking: frames 4, 2, 6 -> (4*5 + 2*15 + 6*10) / 12.
    walk = rep["actions"]["Walking"]
    assert walk["frames"] == 12 and walk["sequences"] == 3
    assert walk["mpjpe"] == pytest.approx((4 * 5 + 2 * 15 + 6 * 10) / 12, abs=1e-3)
    assert rep["actions"]["Sitting"]["mpjpe"] == pytest.approx(20.0, abs=1e-3)
    assert rep["action_mean"]["mpjpe"] == pytest.approx((walk["mpjpe"] + 20.0) / 2, abs=1e-4)
    assert rep["all_frames"]["mpjpe"] == pytest.approx((4 * 5 + 2 * 15 + 6 * 10 + 3 * 20) / 15, abs=1e-3)
    assert rep["by_subject"]["S11"]["actions"]["Walking"]["mpjpe"] == pytest.approx(10.0, abs=1e-3)
    assert set(rep["by_subject"]["S9"]["actions"]) == {"Walking", "Sitting"}
    text = format_table(rep)
    assert "Protocol #1   (MPJPE) action-wise average:" in text and "Evaluating on subject S11" in text


def test_mean_pose_baseline_hand_computed():
    train = [np.zeros((5, 2, 3), np.float32)]
    train[0][:, 1] = [0, 0, 1]
    train[0][:, 0] = [7, 7, 7]  # the trajectory is ignored (root zeroed)
    test = [np.zeros((3, 2, 3), np.float32)]
    test[0][:, 1] = [0, 0.03, 1]
    assert mean_pose_baseline(train, test) == pytest.approx(15.0, abs=1e-4)


def test_write_json_is_atomic_and_strict(tmp_path):
    path = write_json(tmp_path / "sub" / "r.json", {"a": float("nan"), "b": np.float32(1.5), "c": (np.int64(3),)})
    assert json.loads(path.read_text()) == {"a": None, "b": 1.5, "c": [3]}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]


def test_sequence_set_errors():
    with pytest.raises(ValueError, match="at least one sequence"):
        SequenceSet([], pad=1)
    with pytest.raises(ValueError, match="causal_shift"):
        SequenceSet([np.zeros((3, 2, 2))], pad=2, causal_shift=1)
    ss = SequenceSet([np.zeros((3, 2, 2))], pad=2)
    with pytest.raises(ValueError, match="receptive field 3 does not match"):
        ss.predict(WindowTap(1, 0))
    with pytest.raises(ValueError, match="kps_left"):
        ss.predict(WindowTap(2, 0), flip=True)
    with pytest.raises(ValueError, match="3D ground truth"):
        final_evaluation(ss, WindowTap(2, 0), [], [], tta=False)
