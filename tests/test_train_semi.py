"""Semi-supervised training (back-projection) beats supervised training on the same labels.

10 % of the training frames are labelled (subject S1, half of each sequence via --subset 0.5);
the unlabelled subjects S5-S8 add only 2D keypoints and cameras. The same labels, model, epochs
and seed train a supervised-only baseline. Measured on this data (N-MPJPE, mm): supervised 150-168,
semi-supervised 124-135 over three seeds/architectures.
"""
from __future__ import annotations

import pytest

from fastlift.train.args import parse_args
from fastlift.train.runner import main as run_main

from helpers import one_thread_fixture, synthetic_data


one_thread = one_thread_fixture()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from fastlift.data import synthetic as syn

    return synthetic_data(tmp_path_factory, seed=0, subjects=syn.SUBJECTS,
                          actions=("Walking 1", "Jogging 1", "Waving 1", "Squats 1", "Boxing 1"), frames_per_action=300)


def test_semi_supervised_beats_supervised_on_the_same_labels(data_dir, tmp_path):
    common = ["-d", "synthetic", "--data-dir", str(data_dir), "-k", "gt", "-str", "S1", "--subset", "0.5",
              "-arc", "3,3", "-ch", "64", "-e", "8", "--warmup", "2", "-b", "128", "--no-eval", "--no-progress",
              "--seed", "1"]
    reports = {}
    for name, extra in (("supervised", []), ("semi", ["-sun", "S5,S6,S7,S8"])):
        res = run_main(parse_args(common + extra + ["-c", str(tmp_path / name)]), log=lambda s: None)
        reports[name] = res["report"]["action_mean"]
        if name == "semi":
            tr = res["trainer"]
            labelled = sum(p.shape[0] for p in tr.exp.train.poses_2d)
            unlabelled = sum(p.shape[0] for p in tr.exp.semi.poses_2d)
            # S1..S8 have 5 actions x 4 cameras x 300 = 6000 frames each: 3000 labelled of 30000 (10 %).
            assert (labelled, unlabelled) == (3000, 24000)
    sup, semi = reports["supervised"], reports["semi"]
    assert semi["n_mpjpe"] < 0.95 * sup["n_mpjpe"], (semi, sup)
    assert semi["mpjpe"] < sup["mpjpe"], (semi, sup)
