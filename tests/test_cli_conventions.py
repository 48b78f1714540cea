"""Issue 15, "a newcomer's first hour": the command-line conventions every subcommand follows.

One vocabulary (--model FILE, -c/--checkpoint DIR, -o/--out, --precision, --impl, --device), no
command writes over one of its inputs or over an existing output without --overwrite, user
errors are one line (--debug keeps the traceback), data files are unpickled with an allow-list,
damaged checkpoints are called damaged, infer and stream read 2D files the same way.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from fastlift._files import object_entry
from fastlift.cli import main
from fastlift.data.io import COCO_METADATA, H36M_METADATA, save_positions_2d
from fastlift.reference import TemporalModel

REPO = Path(__file__).resolve().parents[1]


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(err: str, command: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"fastlift {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


def digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def coco_file(path, frames=(31, 12), video_meta=True):
    rng = np.random.default_rng(1)
    pos = {f"v{i}.mp4": {"custom": [rng.uniform(50, 600, (t, 17, 2)).astype(np.float32)]}
           for i, t in enumerate(frames)}
    md = dict(COCO_METADATA)
    if video_meta:
        md["video_metadata"] = {v: {"w": 640, "h": 480} for v in pos}
    save_positions_2d(path, pos, md)
    return path


def fastlift_checkpoint(path, layout="h36m", causal=False, widths=(3, 3), channels=16):
    """A checkpoint in fastlift's layout whose architecture record says it was trained on ``layout`` keypoints."""
    torch.manual_seed(0)
    m = TemporalModel(17, 2, 17, list(widths), causal=causal, channels=channels).eval()
    for mod in m.modules():  # non-trivial BN statistics
        if isinstance(mod, torch.nn.BatchNorm1d):
            mod.running_mean.normal_(0, 0.1)
            mod.running_var.uniform_(0.5, 1.5)
    arch = {"filter_widths": list(widths), "channels": channels, "causal": causal, "dense": False,
            "keypoints_layout": layout}
    torch.save({"epoch": 1, "model_pos": m.state_dict(), "model_traj": None, "fastlift": {"architecture": arch}}, path)
    return path


# ---------------------------------------------------------------------------------- 5: one vocabulary
def _options(command: str) -> set[str]:
    from fastlift.cli import build_parser

    parser = build_parser(command)
    sub = parser._fastlift_subparsers[command]
    if command == "data":
        sub = next(a for a in sub._actions if a.dest == "data_command").choices["synth"]
    return {s for a in sub._actions for s in a.option_strings}


@pytest.mark.parametrize("command,expected", [
    ("train", {"--model", "--evaluate", "-c", "--checkpoint", "--precision", "--impl", "--device", "--overwrite",
               "--resume", "-r", "--trust-checkpoint", "--trust-data", "--debug"}),
    ("evaluate", {"--model", "--evaluate", "-c", "-o", "--out", "--output-json", "--precision", "--impl", "--device",
                  "--overwrite", "--trust-checkpoint", "--trust-data"}),
    ("render", {"--model", "--evaluate", "-c", "-o", "--out", "--viz-output", "--precision", "--impl", "--device",
                "--overwrite", "--trust-checkpoint", "--trust-data"}),
    ("infer", {"--model", "--evaluate", "-c", "-o", "--out", "--output", "--precision", "--impl", "--device",
               "--overwrite", "--trust-checkpoint", "--trust-data"}),
    ("stream", {"--model", "-c", "-o", "--out", "--output", "--precision", "--dtype", "--impl", "--backend",
                "--device", "--overwrite", "--trust-checkpoint", "--trust-data"}),
    ("export", {"--model", "-c", "--checkpoint", "-o", "--out", "--precision", "--dtype", "--impl", "--device",
                "--overwrite", "--trust-checkpoint"}),
    ("bench", {"-o", "--out", "--precision", "--dtype", "--device"}),
    ("demo", {"-o", "--out", "--device", "--overwrite"}),
    ("data", {"-o", "--out", "--overwrite"}),
])
def test_every_command_uses_the_same_names(command, expected):
    missing = expected - _options(command)
    assert not missing, f"fastlift {command} lacks {sorted(missing)}"


def test_checkpoint_flag_means_a_folder_everywhere():
    # -c is never the channels flag's prefix victim again (`export -c FILE` used to fail on -ch)
    for command in ("train", "evaluate", "render", "infer", "stream", "export"):
        assert {"-c", "--checkpoint"} <= _options(command), command


@pytest.mark.parametrize("argv,fragment", [
    (["stream", "--input", "x.npz", "--evaluate", "ck.bin"], "--evaluate is --model FILE"),
    (["export", "--out", "a.pt2", "--checkpoint-file", "x"], "unrecognized arguments"),
    (["infer", "--input", "x.npz", "--model", "m.bin", "--backend", "torch"], "--backend is --impl here"),
])
def test_unknown_flags_name_the_subcommand_and_the_right_name(capsys, argv, fragment):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fastlift {argv[0]}: error:") and fragment in err and len(err.strip().splitlines()) == 1


def test_precision_spellings_are_one_set(capsys, tmp_path):
    from fastlift.cli_common import PRECISIONS, normalize_precision

    assert [normalize_precision(v) for v in ("float32", "BF16", "bfloat16", "float16", "auto")] == \
        ["fp32", "bf16", "bf16", "fp16", "auto"]
    assert set(PRECISIONS) == {"fp32", "tf32", "bf16", "fp16", "auto"}
    rc, _, err = run(capsys, "infer", "--input", tmp_path / "x.npz", "--model", "m.bin", "--precision", "fp16")
    assert rc == 2 and "--precision: expected one of fp32, bf16, got 'fp16'" in one_line_error(err, "infer")


# ---------------------------------------------------------------------------------- 1: nothing overwritten
def test_infer_and_stream_never_write_over_their_inputs(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = coco_file(tmp_path / "in.npz")
    ck = fastlift_checkpoint(tmp_path / "ck.bin")
    before = {p: digest(p) for p in (src, ck)}
    for command in ("infer", "stream"):
        for target in (src, ck):
            rc, _, err = run(capsys, command, "--input", src, "--model", ck, "--output", target, "--overwrite",
                             "--device", "cpu")
            assert rc == 2 and "is also an input of this command" in one_line_error(err, command)
    assert {p: digest(p) for p in before} == before
    # existing outputs: refused without --overwrite, replaced with it; default: the current folder
    for command, default in (("infer", "in_3d.npz"), ("stream", "in_stream_3d.npz")):
        assert run(capsys, command, "--input", src, "--model", ck, "--device", "cpu")[0] == 0
        assert (tmp_path / default).is_file()
        stamp = digest(tmp_path / default)
        (tmp_path / default).write_bytes(b"previous result")
        rc, _, err = run(capsys, command, "--input", src, "--model", ck, "--device", "cpu")
        assert rc == 2 and "already exists; pass --overwrite" in one_line_error(err, command)
        assert (tmp_path / default).read_bytes() == b"previous result"
        assert run(capsys, command, "--input", src, "--model", ck, "--device", "cpu", "--overwrite")[0] == 0
        assert digest(tmp_path / default) == stamp


def test_train_refuses_an_earlier_runs_checkpoints_before_loading_data(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ck = tmp_path / "run"
    ck.mkdir()
    (ck / "epoch_2.bin").write_bytes(b"earlier run")
    # --data-dir points nowhere: the output check must come first (before any data is read)
    rc, _, err = run(capsys, "train", "-c", ck, "-e", "2", "--data-dir", tmp_path / "nowhere", "-d", "h36m")
    line = one_line_error(err, "train")
    assert rc == 2 and "already holds epoch_2.bin" in line and "--overwrite" in line and "--resume" in line
    assert (ck / "epoch_2.bin").read_bytes() == b"earlier run"
    afile = tmp_path / "afile"
    afile.write_text("x")
    rc, _, err = run(capsys, "train", "-c", afile, "--data-dir", tmp_path / "nowhere", "-d", "h36m")
    assert rc == 2 and "-c/--checkpoint: expected a folder, got the file" in one_line_error(err, "train")


def test_bench_writes_into_the_current_folder(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results = REPO / "bench" / "results"
    before = {p.name: digest(p) for p in results.iterdir() if p.is_file()}
    rc, out, err = run(capsys, "bench", "--plan", "tiny", "--scenario", "sequence", "--device", "cpu", "--no-png",
                       "--no-compile", "--quiet")
    assert rc == 0, err
    assert any(p.suffix == ".json" for p in tmp_path.iterdir()), list(tmp_path.iterdir())
    assert {p.name: digest(p) for p in results.iterdir() if p.is_file()} == before


# ---------------------------------------------------------------------------------- 2: stream == infer
@pytest.mark.parametrize("causal", [False, True])
def test_stream_reads_coco_files_exactly_as_infer(capsys, tmp_path, causal):
    src = coco_file(tmp_path / "wild.npz")
    ck = fastlift_checkpoint(tmp_path / "ck.bin", causal=causal)
    a, b = tmp_path / "infer.npz", tmp_path / "stream.npz"
    rc, out, err = run(capsys, "infer", "--input", src, "--model", ck, "-o", a, "-no-tta", "--device", "cpu")
    assert rc == 0, err
    rc, out, err = run(capsys, "stream", "--input", src, "--model", ck, "-o", b, "--streams", "2", "--device", "cpu")
    assert rc == 0, err
    assert "converted to the Human3.6M layout" in out
    ra, rb = np.load(a, allow_pickle=True), np.load(b, allow_pickle=True)
    pa, pb = ra["positions_3d"].item(), rb["positions_3d"].item()
    ma, mb = ra["metadata"].item(), rb["metadata"].item()
    assert ma["converted"] == mb["converted"] == "coco-to-h36m" and ma["input_layout"] == mb["input_layout"] == "coco"
    assert ma["layout_name"] == mb["layout_name"] == "h36m" and ma["resolution_from"] == mb["resolution_from"]
    for video in pa:
        x, y = pa[video]["custom"][0], pb[video]["custom"][0]
        np.testing.assert_allclose(y, x, rtol=1e-4, atol=1e-5 * np.abs(x).max())
    # without conversion the poses would differ: the test can fail
    rc, _, err = run(capsys, "stream", "--input", src, "--model", ck, "-o", tmp_path / "raw.npz", "--convert", "none",
                     "--device", "cpu")
    assert rc == 0, err
    raw = np.load(tmp_path / "raw.npz", allow_pickle=True)["positions_3d"].item()
    assert np.abs(raw["v0.mp4"]["custom"][0] - pa["v0.mp4"]["custom"][0]).max() > 1e-3


def test_stream_asks_for_the_resolution_like_infer(capsys, tmp_path):
    src = coco_file(tmp_path / "nores.npz", video_meta=False)
    ck = fastlift_checkpoint(tmp_path / "ck.bin")
    for command in ("infer", "stream"):
        rc, _, err = run(capsys, command, "--input", src, "--model", ck, "-o", tmp_path / f"{command}.npz",
                         "--device", "cpu")
        assert rc == 2 and "pass --resolution W H" in one_line_error(err, command)
        assert not (tmp_path / f"{command}.npz").exists()


# ---------------------------------------------------------------------------------- 3: one-line errors
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device_is_one_line(capsys, tmp_path):
    src = coco_file(tmp_path / "in.npz")
    ck = fastlift_checkpoint(tmp_path / "ck.bin")
    for command in ("infer", "stream"):
        rc, _, err = run(capsys, command, "--input", src, "--model", ck, "-o", tmp_path / "o.npz", "--device", "cuda")
        assert rc == 2 and "--device: 'cuda' is not available" in one_line_error(err, command)
    rc, _, err = run(capsys, "demo", "--device", "cuda", "-o", tmp_path / "d")
    assert rc == 2 and "--device" in one_line_error(err, "demo") and not (tmp_path / "d").exists()


def test_output_locations_are_checked_before_work(capsys, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    rc, _, err = run(capsys, "data", "synth", "--out", afile / "x")
    assert rc == 2 and "is a file, not a folder" in one_line_error(err, "data")
    rc, _, err = run(capsys, "demo", "--out", afile)
    assert rc == 2 and "-o/--out: expected a folder, got the file" in one_line_error(err, "demo")
    rc, _, err = run(capsys, "demo", "-e", "0", "--out", tmp_path / "demo")
    assert rc == 2 and "-e/--epochs: expected a positive integer, got 0" in one_line_error(err, "demo")
    assert not (tmp_path / "demo").exists()  # no empty folder left behind
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "report.json").write_text("{}")
    rc, _, err = run(capsys, "demo", "--out", tmp_path / "old")
    assert rc == 2 and "already holds an earlier demo run" in one_line_error(err, "demo")


def test_render_and_evaluate_name_the_right_flags(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, _, err = run(capsys, "render", "--viz-action", "Walking 1", "-o", "a.gif")
    assert rc == 2 and "--viz-subject: expected the subject" in one_line_error(err, "render")
    rc, _, err = run(capsys, "evaluate", "--model", "missing.bin")
    line = one_line_error(err, "evaluate")
    assert rc == 2 and "no such file 'missing.bin'" in line
    # a --model path without -c: its folder is the checkpoint folder (evaluation.json goes next to it)
    from fastlift.train.args import parse_args, resolve_defaults

    (tmp_path / "runs" / "quick").mkdir(parents=True)
    (tmp_path / "runs" / "quick" / "epoch_3.bin").write_bytes(b"")
    args = resolve_defaults(parse_args(["--model", "runs/quick/epoch_3.bin"], "fastlift evaluate"))
    assert (args.checkpoint, args.evaluate) == (str(Path("runs/quick")), "epoch_3.bin")
    args = resolve_defaults(parse_args(["-c", "ck", "--evaluate", "epoch_3.bin"], "fastlift evaluate"))
    assert (args.checkpoint, args.evaluate) == ("ck", "epoch_3.bin")
    assert not (tmp_path / "checkpoint").exists()


def test_debug_keeps_the_traceback(tmp_path):
    with pytest.raises(ValueError, match="-e/--epochs"):
        main(["demo", "-e", "0", "--out", str(tmp_path / "d"), "--debug"])


def test_internal_errors_are_one_line_too(capsys, monkeypatch):
    import fastlift.info as info

    def boom(args):
        raise KeyError("bug")

    monkeypatch.setattr(info, "run", boom)
    rc, _, err = run(capsys, "info")
    assert rc == 1 and err.startswith("fastlift info: internal error: KeyError") and "--debug" in err
    assert len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------- 4: damaged checkpoints
def test_damaged_checkpoints_are_called_damaged(capsys, tmp_path):
    src = coco_file(tmp_path / "in.npz")
    good = fastlift_checkpoint(tmp_path / "good.bin")
    data = good.read_bytes()
    cases = {"trunc.bin": data[: len(data) // 2], "empty.bin": b"", "text.bin": b"hello, not a checkpoint",
             "flip.bin": data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 0xFF]) + data[len(data) // 2 + 1:]}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        for command in ("infer", "stream"):
            rc, _, err = run(capsys, command, "--input", src, "--model", tmp_path / name, "-o", tmp_path / "o.npz",
                             "--device", "cpu")
            line = one_line_error(err, command)
            assert rc == 2 and "is damaged or not a checkpoint" in line, line
            assert "--trust-checkpoint" not in line and not (tmp_path / "o.npz").exists()
            assert re.search(r"(\w|\)|\.|'|\])$", line.rstrip()) and not line.rstrip().endswith("-"), line
    rc, _, err = run(capsys, "export", "--model", tmp_path / "trunc.bin", "-o", tmp_path / "x.pt2")
    assert rc == 2 and "damaged" in one_line_error(err, "export")


def test_clip_never_cuts_mid_word():
    from fastlift.checkpoint import _clip

    text = "PytorchStreamReader failed reading zip archive: failed finding central directory " * 5
    out = _clip(text, 100)
    assert len(out) <= 104 and out.endswith(" ...") and text.startswith(out[:-4]) and text[len(out) - 4] == " "


# ---------------------------------------------------------------------------------- 10: safe unpickling
class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_file(path, marker, where="positions"):
    pos = {"v": {"custom": [np.zeros((9, 17, 2), np.float32)]}}
    md = dict(COCO_METADATA, video_metadata={"v": {"w": 100, "h": 100}})
    if where == "positions":
        pos["v"]["x"] = _Evil(marker)
    else:
        md["extra"] = _Evil(marker)
    np.savez(path, positions_2d=object_entry(pos), metadata=object_entry(md))
    return path


@pytest.mark.parametrize("command", ["infer", "stream"])
def test_keypoint_files_cannot_run_code(capsys, tmp_path, command):
    marker = tmp_path / "pwned"
    ck = fastlift_checkpoint(tmp_path / "ck.bin")
    for where in ("positions", "metadata"):
        evil = _evil_file(tmp_path / f"evil_{where}.npz", marker, where)
        rc, _, err = run(capsys, command, "--input", evil, "--model", ck, "-o", tmp_path / "o.npz", "--device", "cpu")
        line = one_line_error(err, command)
        assert rc == 2 and "posix.system" in line and str(evil) in line and "--trust-data" in line, line
        assert not marker.exists(), "the pickle's os.system ran"


def test_every_npz_reader_refuses_code_and_trust_data_opts_out(capsys, tmp_path):
    from fractions import Fraction

    from fastlift.data.io import DisallowedPickle, read_keypoints, read_positions_3d, trusted_data

    marker = tmp_path / "pwned"
    p3 = tmp_path / "data_3d_x.npz"
    np.savez(p3, positions_3d=object_entry({"S1": {"A": np.zeros((4, 17, 3), np.float32)}, "z": _Evil(marker)}))
    with pytest.raises(DisallowedPickle, match="posix.system"):
        read_positions_3d(p3)
    with pytest.raises(DisallowedPickle, match="posix.system"):
        read_keypoints(_evil_file(tmp_path / "e.npz", marker))
    assert not marker.exists()
    # a harmless object outside the allow-list: refused by default, accepted with --trust-data
    benign = tmp_path / "benign.npz"
    md = dict(H36M_METADATA, video_metadata={"v": {"w": 100, "h": 100}}, fps=Fraction(50, 1))
    np.savez(benign, positions_2d=object_entry({"v": {"c": [np.zeros((30, 17, 2), np.float32)]}}),
             metadata=object_entry(md))
    with pytest.raises(DisallowedPickle, match="fractions.Fraction"):
        read_keypoints(benign)
    with trusted_data():
        assert read_keypoints(benign).metadata["fps"] == 50
    assert read_keypoints(benign, trust=True).num_joints == 17
    ck = fastlift_checkpoint(tmp_path / "ck.bin")
    argv = ["infer", "--input", benign, "--model", ck, "-o", tmp_path / "o.npz", "--device", "cpu"]
    rc, _, err = run(capsys, *argv)
    assert rc == 2 and "fractions.Fraction" in one_line_error(err, "infer")
    rc, _, err = run(capsys, *argv, "--trust-data")
    assert rc == 0, err
    # the published layouts (dicts, lists, None, numpy arrays and scalars) need no trust
    ok = tmp_path / "ok.npz"
    np.savez(ok, positions_2d=object_entry({"v": {"c": [np.zeros((3, 17, 2), np.float32), None]}}),
             metadata=object_entry(dict(COCO_METADATA, num_joints=np.int64(17), scale=np.float32(1.5),
                                        tags=("a", b"b", 1.5, True, None, 2 + 1j))))
    assert read_keypoints(ok).num_joints == 17


# ---------------------------------------------------------------------------------- 7, 8: demo report, render
def test_demo_report_explains_its_numbers():
    from fastlift.demo import METRICS, _markdown

    r = {"data": {"dir": "d"}, "total_seconds": 1.0, "torch_threads": 1, "threads_reason": "busy CPU",
         "train": {"epochs": 1, "receptive_field": 27, "architecture": "3,3,3", "channels": 8, "device": "cpu",
                   "impl": "auto", "seconds": 1.0},
         "evaluate": {"mpjpe": 50.0, "p_mpjpe": 40.0, "n_mpjpe": 48.0, "mpjve": 3.0, "mean_pose_baseline_mpjpe": 200.0},
         "stream": {"streams": 8, "frames_per_stream": 100, "delay_frames": 13,
                    "step_latency_ms": {"p50": 0.3, "p90": 0.4, "p99": 0.9}, "frames_per_second": 1000.0,
                    "max_abs_diff_vs_whole_sequence": 1e-7, "streamed_mpjpe_mm": 45.0,
                    "whole_sequence_mpjpe_same_frames_mm": 45.0},
         "throughput": {"frames": 3000, "device": "cpu", "impl": "folded torch (CPU)", "dtype": "float32",
                        "fastlift_frames_per_s": 400.0, "reference_fp32_frames_per_s": 380.0, "speedup": 1.05,
                        "max_rel_diff_vs_reference": 1e-7},
         "artifacts": {"checkpoint": "c.bin"}}
    md = _markdown(r)
    for key, meaning in METRICS.items():
        assert f"| {key} |" in md and meaning in md
    assert "test-time flip augmentation" in md and "only these 8 sequences" in md
    assert "reference time / fastlift time" in md and "1 epoch of" in md


@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_render_streams_frames_to_the_encoder(tmp_path, suffix):
    pytest.importorskip("matplotlib")
    pytest.importorskip("PIL")
    import tracemalloc

    from fastlift.skeleton import H36M_17
    from fastlift.train.render import ffmpeg_exe, render_animation

    if suffix == ".mp4" and ffmpeg_exe() is None:
        pytest.skip("no ffmpeg (pip install imageio-ffmpeg)")
    rng = np.random.default_rng(0)

    def peak(n):
        kp = rng.uniform(100, 900, (n, 17, 2)).astype(np.float32)
        pose = rng.normal(0, 0.3, (n, 17, 3)).astype(np.float32)
        tracemalloc.start()
        render_animation(kp, {"Reconstruction": pose}, H36M_17, 50, tmp_path / f"a{n}{suffix}", size=2,
                         progress=False)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(4), peak(24)
    assert large < 1.5 * small + (1 << 20), (small, large)  # memory does not grow with the frame count
    if suffix == ".gif":
        from PIL import Image

        with Image.open(tmp_path / f"a24{suffix}") as im:
            assert im.n_frames == 24
    else:
        import subprocess

        p = subprocess.run([ffmpeg_exe(), "-i", str(tmp_path / f"a24{suffix}"), "-map", "0:v:0", "-c", "copy", "-f",
                            "null", "-"], capture_output=True, text=True)
        assert re.search(r"frame=\s*24\b", p.stderr), p.stderr[-500:]


def test_training_curves_in_mm_with_integer_epochs(tmp_path):
    pytest.importorskip("matplotlib")
    import types

    from fastlift.train.loop import Trainer

    fake = types.SimpleNamespace(history={"loss_3d_train": [0.1, 0.08, 0.07], "loss_3d_train_eval": [0.09, 0.07, 0.06],
                                          "loss_3d_valid": [0.1, 0.09, 0.08]}, semi=False, checkpoint_dir=tmp_path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seen = {}
    real_savefig = plt.Figure.savefig

    def spy(fig, path, *a, **k):
        ax = fig.axes[0]
        seen["ylabel"] = ax.get_ylabel()
        seen["ticks"] = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        seen["ymax"] = max(max(line.get_ydata()) for line in ax.get_lines())
        return real_savefig(fig, path, *a, **k)

    plt.Figure.savefig = spy
    try:
        Trainer.export_curves(fake)
    finally:
        plt.Figure.savefig = real_savefig
    assert seen["ylabel"] == "MPJPE (mm)" and seen["ymax"] == pytest.approx(100.0)
    assert seen["ticks"] and all(float(t).is_integer() for t in seen["ticks"])


# ---------------------------------------------------------------------------------- 9: run.py compatibility
def test_dataset_skeleton_is_a_method_as_in_the_reference(tmp_path):
    from fastlift import data
    from fastlift.skeleton import Skeleton

    ds, _ = data.load("synthetic", "det", data_dir=data.ensure_synthetic())
    assert callable(ds.skeleton) and isinstance(ds.skeleton(), Skeleton) and ds.skeleton().num_joints == 17


# ---------------------------------------------------------------------------------- 11: README
def test_readme_facts():
    from fastlift.data.synthetic import DEFAULT_ACTIONS, FAMILIES

    text = (REPO / "README.md").read_text()
    m = re.search(r"(\d+) motion families", text)
    assert m and int(m.group(1)) == len(FAMILIES), m and m.group(0)
    m = re.search(r"(\d+) actions", text)
    assert m and int(m.group(1)) == len(DEFAULT_ACTIONS)
    example = text[text.index("## Using the library"):text.index("### Streaming")]
    assert "pretrained_h36m_cpn.bin" not in example or "VideoPose3D" in example.split("pretrained_h36m_cpn.bin")[0][-400:] \
        or "published" in example
    assert "weights_only=False" not in example
    # the README's commands use the one vocabulary
    assert "--evaluate" not in text.split("## Performance")[0] + example
