"""Flags of ``fastlift train`` / ``evaluate`` / ``render``: run.py names and defaults, and clear errors."""
from __future__ import annotations

import warnings

import pytest

from fastlift.cli import main
from fastlift.train.args import finalize_architecture, parse_args, parse_architecture, resolve_defaults, validate

from helpers import run_cli


def test_defaults_are_run_py_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = parse_args([])
    expected = dict(subjects_train="S1,S5,S6,S7,S8", subjects_test="S9,S11", subjects_unlabeled="", actions="*",
                    checkpoint="checkpoint", checkpoint_frequency=10, resume="", evaluate="", render=False,
                    by_subject=False, export_training_curves=False, stride=1, epochs=60, batch_size=1024,
                    dropout=0.25, learning_rate=0.001, lr_decay=0.95, data_augmentation=True,
                    test_time_augmentation=True, subset=1, downsample=1, warmup=1, no_eval=False,
                    disable_optimizations=False, linear_projection=False, bone_length_term=True, no_proj=False,
                    viz_subject=None, viz_action=None, viz_camera=0, viz_video=None, viz_skip=0, viz_output=None,
                    viz_export=None, viz_bitrate=3000, viz_no_ground_truth=False, viz_limit=-1, viz_downsample=1,
                    viz_size=5, impl="auto", precision="fp32", seed=0)
    for k, v in expected.items():
        assert getattr(a, k) == v, k
    validate(a)
    finalize_architecture(a)
    assert (a.architecture, a.channels, a.causal, a.dense) == ("3,3,3", 1024, False, False)
    # No data directory anywhere: the embedded synthetic data with its detector-like 2D.
    assert (a.dataset, a.keypoints, a.data_dir) == ("synthetic", "det", None)
    assert a.device == "cpu" or a.device.startswith(("cuda", "xpu", "mps"))


def test_reference_command_line_parses(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ("-d h36m -k cpn_ft_h36m_dbb -str S1 -ste S9 -sun S5,S6 -a Walk,Sit -c ck --checkpoint-frequency 5 -s 2 "
            "-e 10 -b 512 -drop 0.1 -lr 0.002 -lrd 0.9 -no-da -no-tta -arc 3,3,3,3,3 --causal -ch 512 --subset 0.1 "
            "--downsample 2 --warmup 3 --dense --disable-optimizations --linear-projection --no-bone-length "
            "--no-proj --by-subject --viz-subject S9 --viz-action Walking --viz-camera 2 --viz-video v.mp4 "
            "--viz-skip 4 --viz-output out.gif --viz-export out.npy --viz-bitrate 100 --viz-no-ground-truth "
            "--viz-limit 50 --viz-downsample 2 --viz-size 6").split()
    a = parse_args(argv)
    validate(a)
    assert (a.dataset, a.keypoints, a.data_dir) == ("h36m", "cpn_ft_h36m_dbb", "data")
    assert (a.subjects_train, a.subjects_test, a.subjects_unlabeled, a.actions) == ("S1", "S9", "S5,S6", "Walk,Sit")
    assert (a.checkpoint, a.checkpoint_frequency, a.stride, a.epochs, a.batch_size) == ("ck", 5, 2, 10, 512)
    assert (a.dropout, a.learning_rate, a.lr_decay) == (0.1, 0.002, 0.9)
    assert not a.data_augmentation and not a.test_time_augmentation and not a.bone_length_term
    assert (a.architecture, a.causal, a.channels, a.dense) == ("3,3,3,3,3", True, 512, True)
    assert (a.subset, a.downsample, a.warmup) == (0.1, 2, 3)
    assert a.disable_optimizations and a.linear_projection and a.no_proj and a.by_subject
    assert (a.viz_camera, a.viz_skip, a.viz_bitrate, a.viz_limit, a.viz_downsample, a.viz_size) == (2, 4, 100, 50, 2, 6)
    assert a.viz_no_ground_truth and (a.viz_output, a.viz_export, a.viz_video) == ("out.gif", "out.npy", "v.mp4")


def test_dataset_default_follows_the_data_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = resolve_defaults(parse_args(["--data-dir", "mydata"]))
    assert (a.dataset, a.keypoints, a.data_dir) == ("h36m", "cpn_ft_h36m_dbb", "mydata")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "data_3d_h36m.npz").write_bytes(b"")
    a = resolve_defaults(parse_args([]))
    assert (a.dataset, a.data_dir) == ("h36m", "data")  # a reference checkout's layout keeps working
    a = resolve_defaults(parse_args(["-d", "humaneva15"]))
    assert a.keypoints is None and a.data_dir == "data"


def test_architecture_from_checkpoint_unless_given():
    meta = {"filter_widths": [3, 3, 3, 3, 3], "channels": 256, "causal": True, "dense": False}
    a = finalize_architecture(parse_args([]), meta)
    assert (a.architecture, a.channels, a.causal, a.dense) == ("3,3,3,3,3", 256, True, False)
    a = finalize_architecture(parse_args(["-arc", "3,3", "-ch", "64"]), meta)
    assert (a.architecture, a.channels, a.causal) == ("3,3", 64, True)
    assert parse_architecture(" 3, 5 ,3") == [3, 5, 3]


@pytest.mark.parametrize("argv,fragment", [
    (["-r", "a.bin", "--evaluate", "b.bin"], "--resume and --model (--evaluate) cannot be set at the same time"),
    (["--export-training-curves", "--no-eval"], "--export-training-curves and --no-eval"),
    (["-s", "0"], "-s/--stride: expected a positive"),
    (["-s", "4", "-b", "2"], "must be at least -s/--stride"),
    (["-e", "0"], "-e/--epochs: expected a positive number of epochs, got 0"),
    (["-b", "0"], "-b/--batch-size"),
    (["-drop", "1.0"], "-drop/--dropout: expected a probability in [0, 1), got 1.0"),
    (["-lr", "0"], "-lr/--learning-rate: expected a positive number, got 0.0"),
    (["-lrd", "-1"], "-lrd/--lr-decay"),
    (["--subset", "0"], "--subset: expected a fraction in (0, 1], got 0.0"),
    (["--subset", "1.5"], "--subset: expected a fraction in (0, 1], got 1.5"),
    (["--downsample", "0"], "--downsample: expected a positive integer factor, got 0"),
    (["--warmup", "-1"], "--warmup"),
    (["--checkpoint-frequency", "0"], "--checkpoint-frequency"),
    (["-arc", "3,4,3"], "-arc/--architecture"),
    (["-arc", "3,x"], "-arc/--architecture: expected comma-separated odd integers"),
    (["-ch", "0"], "-ch/--channels: expected a positive integer, got 0"),
    (["--device", "nonsense"], "--device: expected a torch device"),
    (["--render", "--viz-action", "Walking", "--viz-output", "a.gif"], "--viz-subject: expected the subject"),
    (["--render", "--viz-subject", "S9", "--viz-output", "a.gif"], "--viz-action: expected the action"),
    (["--render", "--viz-subject", "S9", "--viz-action", "W"], "--viz-output: expected a .gif or .mp4 file to write (and/or --viz-export"),
    (["--render", "--viz-subject", "S9", "--viz-action", "W", "--viz-output", "a.avi"], "--viz-output: expected a .gif"),
    (["--viz-limit", "0"], "--viz-limit"),
    (["--seed", "-3"], "--seed"),
])
def test_bad_flags_give_clear_errors(capsys, tmp_path, monkeypatch, argv, fragment):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_cli(capsys, "train", *argv)
    assert rc == 2
    assert err.startswith("fastlift train: error:"), err
    assert fragment in err, err
    assert "Traceback" not in err


def test_unavailable_device_and_kernels(capsys, tmp_path, monkeypatch):
    import torch

    monkeypatch.chdir(tmp_path)
    if not torch.cuda.is_available():
        rc, _, err = run_cli(capsys, "train", "--device", "cuda")
        assert rc == 2 and "--device: 'cuda' is not available on this machine" in err
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="--impl triton: the Triton kernels need a CUDA device"):
        validate(parse_args(["--impl", "triton", "--device", "cpu"]))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    validate(parse_args(["--impl", "triton", "--device", "cpu"]))
    with pytest.raises(ValueError, match="--precision bf16: the Triton CPU interpreter has no bfloat16"):
        validate(parse_args(["--impl", "triton", "--device", "cpu", "--precision", "bf16"]))
    validate(parse_args(["--impl", "reference", "--device", "cpu", "--precision", "bf16"]))


def test_evaluate_needs_a_checkpoint_and_missing_files_are_named(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, _, err = run_cli(capsys, "evaluate")
    assert rc == 2 and "--model (--evaluate): expected the checkpoint file to evaluate" in err
    rc, _, err = run_cli(capsys, "evaluate", "-c", "ck", "--evaluate", "epoch_3.bin")
    assert rc == 2 and "no such file" in err and "epoch_3.bin" in err
    rc, _, err = run_cli(capsys, "train", "--data-dir", str(tmp_path / "nowhere"))
    assert rc == 2 and "--data-dir: no such folder" in err


def test_semi_only_flags_warn_without_unlabeled_subjects():
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        validate(parse_args(["--linear-projection", "--no-bone-length"]))
    assert any("only affect semi-supervised training" in str(x.message) for x in w)


def test_non_numeric_values_are_argparse_errors(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "-e", "many"])
    assert e.value.code == 2
    assert "expected an integer, got 'many'" in capsys.readouterr().err


def test_help_lists_run_py_flags(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ("-str", "-ste", "-sun", "--checkpoint-frequency", "-no-da", "-no-tta", "-arc", "--causal",
                 "--subset", "--downsample", "--warmup", "--no-eval", "--dense", "--disable-optimizations",
                 "--linear-projection", "--no-bone-length", "--no-proj", "--by-subject", "--export-training-curves",
                 "--viz-bitrate", "--data-dir", "--impl", "--precision", "--seed", "--device"):
        assert flag in out, flag
