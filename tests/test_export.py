"""Export without Python (issue 8): torch.export + AOTInductor packages and the C++ runner.

Fast tests (no compilation): architecture inference and checkpoint loading, the streaming step
and the exported programs against ``fastlift.reference.lift_sequence``, the Python-free graph
checks, CLI errors. One module-scoped package (a symmetric model trained for one epoch by
``fastlift train``, with the streaming step) is compiled with AOTInductor while the C++ runner
builds with CMake in the background; both are then checked against Python on the same inputs,
including the runner's bad-input handling (issue 8's done-criterion, in the default CI run). Slow
tests add a causal ``--causal-stream`` package and a bf16 ``--random-init`` package.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from fastlift import export as E
from fastlift.cli import main
from fastlift.fold import fold_lifter
from fastlift.model import fuse
from fastlift.reference import TemporalModelOptimized1f, lift_sequence

import helpers
from helpers import rel_err, run_cli, write_reference_checkpoint

REPO = Path(__file__).resolve().parents[1]
J_IN, J_OUT = 17, 17
ARC, CH = [3, 3], 32  # receptive field 9, pad 4: tiny, so AOTInductor compiles quickly


def make_model(fw=ARC, causal=False, **kwargs):
    """:func:`helpers.make_model` with this module's defaults (17 joints in and out, 32 channels, fp32)."""
    return helpers.make_model(fw, causal, **{"channels": CH, "dtype": torch.float32, "j_in": J_IN, "j_out": J_OUT,
                                             **kwargs})


def random_keypoints(shape, seed, dtype=np.float32):
    """Random-walk keypoint tracks (correlated like real ones) along the frame axis (-3)."""
    g = np.random.default_rng(seed)
    return (g.standard_normal(shape) * 0.1).cumsum(axis=-3).astype(dtype)


def save_checkpoint(path, model, **extra):
    """VideoPose3D's checkpoint layout, including the data generator's numpy RandomState."""
    torch.save({"epoch": 7, "lr": 0.00095, "random_state": np.random.RandomState(1234),
                "optimizer": {"state": {}, "param_groups": []}, "model_pos": model.state_dict(), "model_traj": None,
                **extra}, path)


# ---------------------------------------------------------------------------- architecture
@pytest.mark.parametrize("fw,dense", [([3, 3, 3], False), ([3, 5], False), ([1], False), ([3, 3, 3], True)],
                         ids=["27f", "15f", "1f", "27f-dense"])
def test_architecture_from_state_dict(fw, dense):
    m = make_model(fw, dense=dense, channels=16, j_in=15, j_out=1)
    arch = E.architecture_from_state_dict(m.state_dict(), dense=dense)
    assert arch == E.Architecture(15, 2, 1, fw, 16, False, dense)
    assert arch.receptive_field == m.receptive_field()


def test_architecture_overrides_and_contradictions():
    sd = make_model([3, 3, 3], dense=True, channels=16).state_dict()
    # Dense kernels (3, 7, 19) read as dilated widths without --dense; -arc exposes the mismatch.
    assert E.architecture_from_state_dict(sd).filter_widths == [3, 7, 19]
    with pytest.raises(ValueError, match="add --dense"):
        E.architecture_from_state_dict(sd, filter_widths=[3, 3, 3])
    sd = make_model([3, 3], channels=16).state_dict()
    assert E.architecture_from_state_dict(sd, in_features=1).joints_in == 34
    assert E.architecture_from_state_dict(sd, causal=True).causal
    with pytest.raises(ValueError, match=r"channels: the checkpoint has 16 channels, got -ch 32"):
        E.architecture_from_state_dict(sd, channels=32)
    with pytest.raises(ValueError, match=r"joints_in: the checkpoint takes 34 values per frame, got --joints-in 16"):
        E.architecture_from_state_dict(sd, joints_in=16)
    with pytest.raises(ValueError, match=r"joints_out: the checkpoint predicts 17 joints, got --joints-out 16"):
        E.architecture_from_state_dict(sd, joints_out=16)
    with pytest.raises(ValueError, match=r"in_features: the checkpoint takes 34 values per frame"):
        E.architecture_from_state_dict(sd, in_features=3)
    with pytest.raises(ValueError, match="does not match the checkpoint"):
        E.architecture_from_state_dict(sd, filter_widths=[3, 3, 3])
    with pytest.raises(ValueError, match="dense: layers_conv.0.weight has kernel width 3"):
        E.architecture_from_state_dict(sd, dense=True)
    with pytest.raises(ValueError, match="no 'expand_conv.weight'"):
        E.architecture_from_state_dict({"foo": torch.zeros(1)})


def test_load_checkpoint_layouts(tmp_path):
    m = make_model([3, 3], causal=True)
    x = torch.from_numpy(random_keypoints((2, 12, J_IN, 2), 0))
    want = lift_sequence(m, x)
    save_checkpoint(tmp_path / "vp3d.bin", m)  # numpy random_state: loads without --trust-checkpoint
    torch.save(m.state_dict(), tmp_path / "bare.bin")
    torch.save({"model_pos": {"module." + k: v for k, v in m.state_dict().items()}}, tmp_path / "dp.bin")
    one_f = make_model([3, 3], causal=True, cls=TemporalModelOptimized1f)
    one_f.load_state_dict(m.state_dict())
    torch.save({"model_pos": one_f.state_dict()}, tmp_path / "1f.bin")
    torch.save({"model_pos": m.state_dict(), "random_state": np.random.RandomState(0).get_state()}, tmp_path / "t.bin")
    # run.py's own file: legacy (non-zip) serialization, numpy 1.x names, no num_batches_tracked
    write_reference_checkpoint(tmp_path / "legacy.bin", m, torch.optim.Adam(m.parameters(), amsgrad=True), 80, 1e-5)
    for name in ("vp3d.bin", "bare.bin", "dp.bin", "1f.bin", "t.bin", "legacy.bin"):
        loaded, arch = E.load_checkpoint(tmp_path / name, causal=True)
        assert arch == E.Architecture(J_IN, 2, J_OUT, [3, 3], CH, True, False)
        assert not loaded.training
        assert torch.equal(lift_sequence(loaded, x), want), name


def test_load_checkpoint_uses_fastlift_record(tmp_path):
    """fastlift's training stack records causal/dense (invisible in the weights) in the checkpoint."""
    m = make_model([3, 3], causal=True, dense=True, channels=16)
    sd = {k: v for k, v in m.state_dict().items() if not k.endswith("num_batches_tracked")}  # old-PyTorch file
    record = {"filter_widths": [3, 3], "channels": 16, "causal": True, "dense": True, "num_joints_in": J_IN,
              "in_features": 2, "num_joints_out": J_OUT}
    torch.save({"model_pos": sd, "fastlift": {"format": 1, "architecture": record}}, tmp_path / "f.bin")
    loaded, arch = E.load_checkpoint(tmp_path / "f.bin")
    assert arch.causal and arch.dense and arch.filter_widths == [3, 3]
    x = torch.from_numpy(random_keypoints((1, 11, J_IN, 2), 3))
    assert torch.equal(lift_sequence(loaded, x), lift_sequence(m, x))
    with pytest.raises(ValueError, match="--causal: the checkpoint records causal=True, got False"):
        E.load_checkpoint(tmp_path / "f.bin", causal=False)


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="--checkpoint: no such file"):
        E.load_checkpoint(tmp_path / "missing.bin")
    (tmp_path / "text.bin").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="--checkpoint: .* is damaged or not a checkpoint"):
        E.load_checkpoint(tmp_path / "text.bin")
    torch.save({"model_traj": {}}, tmp_path / "nopos.bin")
    with pytest.raises(ValueError, match="no 'model_pos' entry.*--key"):
        E.load_checkpoint(tmp_path / "nopos.bin")
    torch.save([1, 2], tmp_path / "list.bin")
    with pytest.raises(ValueError, match="expected a dict"):
        E.load_checkpoint(tmp_path / "list.bin")
    # Arbitrary Python objects are refused unless trusted.
    torch.save({"model_pos": make_model().state_dict(), "args": Path("x")}, tmp_path / "obj.bin")
    with pytest.raises(ValueError, match="--trust-checkpoint"):
        E.load_checkpoint(tmp_path / "obj.bin")
    assert E.load_checkpoint(tmp_path / "obj.bin", trust=True)[1].channels == CH


# ---------------------------------------------------------------------------- streaming step (eager)
@pytest.mark.parametrize("fw,causal,dense", [([3, 3, 3], False, False), ([3, 3, 3], True, False),
                                             ([3, 5], False, True), ([5, 3], True, True), ([1], False, False)],
                         ids=["27f", "27f-causal", "15f-dense", "15f-causal-dense", "1f"])
@pytest.mark.parametrize("t", [1, 6, 40])
def test_stream_step_equals_whole_sequence(fw, causal, dense, t):
    m = make_model(fw, causal, channels=16, dense=dense, dtype=torch.float64, j_in=4, j_out=3)
    step = E.StreamStep(fold_lifter(m))
    assert step.delay == (0 if causal else (m.receptive_field() - 1) // 2)
    x = torch.from_numpy(random_keypoints((3, t, 4, 2), t, np.float64))
    got = E.stream_with_step(step, x, step.delay, step.state_shapes, torch.float64)
    # fp64 math, poses returned as float32.
    assert got.dtype == torch.float32 and got.shape == (3, t, 3, 3)
    assert (got.double() - lift_sequence(m, x)).abs().max() < 1e-6


def test_stream_step_restarts_a_row_without_leaking_state():
    """Rows are independent streams: a row whose frame_index returns to 0 starts a fresh stream."""
    m = make_model([3, 3], channels=16, dtype=torch.float64, j_in=4, j_out=3)
    step = E.StreamStep(fold_lifter(m))
    a = torch.from_numpy(random_keypoints((12, 4, 2), 1, np.float64))
    b = torch.from_numpy(random_keypoints((9, 4, 2), 2, np.float64))
    junk = torch.from_numpy(random_keypoints((5, 4, 2), 3, np.float64)) * 50
    state = step.initial_state(2)
    outs = []
    # Row 0 plays a from the start; row 1 plays junk for 5 steps, then b from frame_index 0.
    for s in range(5 + 9 + step.delay):
        fa = a[min(s, 11)]
        fb = junk[s] if s < 5 else b[min(s - 5, 8)]
        idx = torch.tensor([s, s if s < 5 else s - 5])
        pose, state = step(torch.stack([fa, fb]), idx, state)
        outs.append(pose)
    outs = torch.stack(outs)
    d = step.delay
    assert (outs[d: d + 12, 0].double() - lift_sequence(m, a)).abs().max() < 1e-6
    assert (outs[5 + d: 5 + d + 9, 1].double() - lift_sequence(m, b)).abs().max() < 1e-6


def test_stream_step_input_errors():
    step = E.StreamStep(fold_lifter(make_model([3, 3], channels=16, j_in=4, j_out=3)))
    fr, idx, st = torch.zeros(2, 4, 2), torch.zeros(2, dtype=torch.int64), step.initial_state(2)
    with pytest.raises(ValueError, match=r"frames: expected \(streams, 4, 2\), got \(2, 5, 2\)"):
        step(torch.zeros(2, 5, 2), idx, st)
    with pytest.raises(ValueError, match="frame_index: expected an int64 tensor of shape"):
        step(fr, idx.int(), st)
    with pytest.raises(ValueError, match="state: expected a list of 2 tensors"):
        step(fr, idx, st[:1])
    with pytest.raises(ValueError, match=r"state\[1\]: expected torch.float32 of shape \(2, 7, 16\)"):
        step(fr, idx, [st[0], st[1][:, 1:]])


# ---------------------------------------------------------------------------- exported programs (no compile)
@pytest.mark.parametrize("causal", [False, True], ids=["symmetric", "causal"])
def test_exported_programs_equal_eager(causal):
    m = make_model([3, 3, 3], causal, channels=16)
    programs, info = E.export_programs(m, stream=True)
    assert info["impl"] == "reference" and info["receptive_field"] == 27 and info["delay"] == (0 if causal else 13)
    model, step = programs["model"].module(), programs["step"].module()
    for b, t in [(1, 1), (3, 5), (1, 27), (3, 40)]:
        x = torch.from_numpy(random_keypoints((b, t, J_IN, 2), t))
        want = lift_sequence(m, x)
        assert rel_err(model(x), want) < 1e-5, (b, t)
        got = E.stream_with_step(step, x, info["delay"], info["state_shapes"])
        assert rel_err(got, want) < 1e-5, (b, t)


@pytest.mark.parametrize("dtype", [torch.bfloat16], ids=["bf16"])
def test_cpu_export_traces_the_channels_last_linear_path(dtype):
    # The CPU package runs fuse().lift's executor math (im2col + GEMM, channels-last), not conv1d:
    # Inductor (freezing) prepacks constant-weight addmm into oneDNN linears, not conv1d weights.
    m = make_model([3, 3, 3], False, channels=16)
    programs, _ = E.export_programs(m, dtype=dtype)
    ops = [str(n.target) for n in programs["model"].graph.nodes if n.op == "call_function"]
    assert not [o for o in ops if "conv" in o], ops
    assert ops.count("aten.addmm.default") == 6, ops  # expand, 2 blocks x 2, shrink
    model, fused = programs["model"].module(), fuse(m, dtype=dtype)
    for b, t in [(1, 1), (3, 30)]:
        x = torch.from_numpy(random_keypoints((b, t, J_IN, 2), t))
        got, want = model(x), fused.lift(x)
        assert got.dtype == torch.float32 and got.shape == want.shape
        # The same math as the eager executor: fp32 to rounding, bf16 to bf16 rounding.
        assert rel_err(got, want) < (1e-5 if dtype == torch.float32 else 1e-2), (b, t)
        assert rel_err(got, lift_sequence(m, x)) < E.VERIFY_TOL[dtype], (b, t)


def test_cpu_fp32_export_traces_the_same_path_as_lift():
    # fp32 lift runs run_folded_torch (conv1d on the folded weights) on CPU, and so does the package.
    m = make_model([3, 3, 3], False, channels=16)
    programs, _ = E.export_programs(m, dtype=torch.float32)
    ops = [str(n.target) for n in programs["model"].graph.nodes if n.op == "call_function"]
    assert sum("conv" in o for o in ops) == 6 and "aten.addmm.default" not in ops, ops
    model, fused = programs["model"].module(), fuse(m)
    x = torch.from_numpy(random_keypoints((3, 30, J_IN, 2), 3))
    assert rel_err(model(x), fused.lift(x)) < 1e-5


def test_export_rejects_bad_settings():
    m = make_model()
    with pytest.raises(ValueError, match="impl: 'triton' packages need a CUDA device"):
        E.export_programs(m, impl="triton")
    with pytest.raises(ValueError, match="dtype: expected one of"):
        E.export_programs(m, dtype="int8")
    with pytest.raises(ValueError, match="--out: the package name must end in .pt2"):
        E.export_package(m, "lifter.zip")


def test_python_registered_ops_are_rejected(tmp_path):
    # A fastlift-namespace op with a Python CPU kernel, registered for this test only.
    with torch.library._scoped_library("fastlift", "FRAGMENT") as lib:
        lib.define("_export_test_opaque(Tensor x) -> Tensor")
        lib.impl("_export_test_opaque", lambda x: x * 2, "CPU")
        torch.library.register_fake("fastlift::_export_test_opaque", lambda x: torch.empty_like(x), lib=lib)
        op = torch.ops.fastlift._export_test_opaque

        class Uses(torch.nn.Module):
            def forward(self, x):
                return op(x) + 1

        ep = torch.export.export(Uses(), (torch.randn(2, 3),))
        for device in ("cpu", "cuda"):  # not a Triton op: never compiled into a package
            with pytest.raises(RuntimeError, match=r"calls \['fastlift::_export_test_opaque'\].*without Python"):
                E.check_python_free(ep, "model", device)
    E.check_python_free(E.export_programs(make_model())[0]["model"], "model", "cpu")
    # A compiled wrapper that dispatches through the proxy executor is a fallback, not a kernel.
    wrapper, extern = tmp_path / "w.wrapper.cpp", tmp_path / "w.json"
    wrapper.write_text("AOTI_TORCH_ERROR_CODE_CHECK(aoti_torch_proxy_executor_call_function(proxy_executor, 0));")
    extern.write_text('{"nodes": [{"name": "fastlift::tconv_fwd"}]}')
    with pytest.raises(RuntimeError, match=r"proxy executor \(\['fastlift::tconv_fwd'\]\)"):
        E._check_compiled([str(wrapper), str(extern)], "model")
    wrapper.write_text("// plain kernels")
    E._check_compiled([str(wrapper), str(extern)], "model")


# ---------------------------------------------------------------------------- CLI errors (no compile)
def test_cli_errors(tmp_path, capsys):
    ck = tmp_path / "ck.bin"
    save_checkpoint(ck, make_model())
    out = tmp_path / "l.pt2"
    cases = [
        ([], "--model: required"),
        (["--model", ck, "--random-init"], "either --model or --random-init"),
        (["--model", tmp_path / "nope.bin"], "--model: no such file"),
        (["-c", tmp_path / "nope.bin"], "-c/--checkpoint: no such folder or file"),
        (["--model", ck, "-arc", "3,3,3"], "does not match the checkpoint"),
        (["--model", ck, "-arc", "3,4"], "only odd filter widths"),
        (["--model", ck, "--joints-in", "16"], "--joints-in 16"),
        (["--model", ck, "-ch", "0"], "--channels: expected a positive integer"),
        (["--model", ck, "--impl", "triton"], "impl: 'triton' packages need a CUDA device"),
        (["--model", ck, "--device", "tpu"], "--device: expected cpu or a CUDA device"),
        (["--model", ck, "--precision", "int8"], "--precision: expected one of fp32, bf16, fp16, auto, got 'int8'"),
        (["--model", ck, "--dtype", "tf32"], "--precision: expected one of fp32, bf16, fp16, auto, got 'tf32'"),
    ]
    if not torch.cuda.is_available():
        cases.append((["--model", ck, "--device", "cuda"], "sees no CUDA device"))
    for args, msg in cases:
        rc, _, err = run_cli(capsys, "export", "--out", out, *args)
        assert rc == 2 and msg in err, (args, err)
        assert not out.exists()
    rc, _, err = run_cli(capsys, "export", "--out", tmp_path / "l.zip", "--model", ck)
    assert rc == 2 and "must end in .pt2" in err
    # the package may not replace its own input, nor an existing file without --overwrite
    ck2 = tmp_path / "ck.pt2"
    ck2.write_bytes(ck.read_bytes())
    rc, _, err = run_cli(capsys, "export", "--out", ck2, "--model", ck2, "--overwrite")
    assert rc == 2 and "also an input" in err and ck2.read_bytes() == ck.read_bytes()
    out.write_text("keep")
    rc, _, err = run_cli(capsys, "export", "--out", out, "-c", tmp_path, "--model", "ck.bin")
    assert rc == 2 and "already exists; pass --overwrite" in err and out.read_text() == "keep"


# ---------------------------------------------------------------------------- compiled package + C++ runner
def _compiler_available() -> bool:
    return shutil.which("cmake") is not None and any(shutil.which(c) for c in ("c++", "g++", "clang++"))


class _Build(threading.Thread):
    """Configure and build fastlift_run with CMake (the documented commands) in the background."""

    def __init__(self, build_dir: Path):
        super().__init__(daemon=True)
        self.build_dir = build_dir
        self.log = ""
        self.ok = False

    def run(self):
        prefix = torch.utils.cmake_prefix_path
        steps = [["cmake", "-S", str(REPO), "-B", str(self.build_dir), f"-DCMAKE_PREFIX_PATH={prefix}"],
                 ["cmake", "--build", str(self.build_dir), "-j", str(max(1, min(4, os.cpu_count() or 1)))]]
        for cmd in steps:
            p = subprocess.run(cmd, capture_output=True, text=True)
            self.log += f"$ {' '.join(cmd)}\n{p.stdout}\n{p.stderr}\n"
            if p.returncode != 0:
                return
        self.ok = True


@pytest.fixture(scope="module")
def runner_build(tmp_path_factory):
    if not _compiler_available():
        return None
    build = _Build(tmp_path_factory.mktemp("cpp_build"))
    build.start()
    return build


@pytest.fixture(scope="module")
def runner(runner_build):
    if runner_build is None:
        pytest.skip("the C++ runner test needs cmake and a C++ compiler on PATH (none found)")
    runner_build.join()
    assert runner_build.ok, "building fastlift_run failed:\n" + runner_build.log[-6000:]
    exe = runner_build.build_dir / "fastlift_run"
    assert exe.is_file()
    return exe


def train_checkpoint(directory: Path, arc: str, channels: int, causal: bool) -> Path:
    """Train a tiny lifter for one epoch on the embedded synthetic data with ``fastlift train``
    (in a subprocess, so the training run's global torch state stays out of this process)."""
    cmd = [sys.executable, "-m", "fastlift.cli", "train", "-d", "synthetic", "-arc", arc, "-ch", str(channels),
           "-e", "1", "-b", "256", "--subset", "0.05", "--no-eval", "--no-progress", "-c", str(directory),
           *(["--causal"] if causal else [])]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    ckpt = directory / "epoch_1.bin"
    assert ckpt.is_file(), sorted(os.listdir(directory))
    return ckpt


@pytest.fixture(scope="module")
def sym_package(tmp_path_factory, runner_build):
    """A symmetric model trained by ``fastlift train``, exported through the CLI with the streaming step.

    Requests ``runner_build`` first so that the C++ build overlaps training and compilation.
    """
    d = tmp_path_factory.mktemp("sym")
    ckpt = train_checkpoint(d / "ckpt", "3,3", CH, causal=False)
    out = d / "lifter.pt2"
    rc = main(["export", "-c", str(ckpt), "--out", str(out), "--stream"])  # the old spelling: -c FILE
    assert rc == 0 and out.is_file()
    model, arch = E.load_checkpoint(ckpt)
    assert arch == E.Architecture(J_IN, 2, J_OUT, ARC, CH, False, False)
    return out, model


def test_package_metadata(sym_package):
    path, model = sym_package
    meta = E.read_metadata(path)
    expect = {"format": E.FORMAT, "model_kind": "model", "device": "cpu", "dtype": "float32", "impl": "reference",
              "receptive_field": "9", "pad": "4", "delay": "4", "causal": "0", "dense": "0", "filter_widths": "3,3",
              "channels": str(CH), "joints_in": "17", "in_features": "2", "joints_out": "17", "has_step": "1",
              "state_shapes": "3x34;7x32", "state_dtype": "float32", "random_init": "0", "source": "epoch_1.bin"}
    assert {k: meta["fastlift." + k] for k in expect} == expect
    _, step_meta = E.load_package(path, "step")
    assert step_meta["fastlift.model_kind"] == "step" and step_meta["fastlift.impl"] == "torch"


def test_package_equals_eager_in_python(sym_package):
    path, model = sym_package
    compiled, meta = E.load_package(path, "model")
    step, _ = E.load_package(path, "step")
    fused = fuse(model, impl="reference")
    for b, t in [(1, 1), (3, 4), (1, 9), (3, 37)]:  # shorter than, equal to and beyond the receptive field
        x = torch.from_numpy(random_keypoints((b, t, J_IN, 2), 100 + t))
        want = lift_sequence(model, x)
        got = compiled(x)
        assert got.shape == (b, t, J_OUT, 3) and got.dtype == torch.float32
        assert rel_err(got, fused.lift(x)) < 1e-5 and rel_err(got, want) < 1e-5, (b, t)
        streamed = E.stream_with_step(step, x, int(meta["fastlift.delay"]), E._state_shapes(meta))
        assert rel_err(streamed, want) < 1e-5, (b, t)


def test_load_package_errors(sym_package, tmp_path):
    path, _ = sym_package
    with pytest.raises(FileNotFoundError, match="package: no such file"):
        E.load_package(tmp_path / "none.pt2")
    (tmp_path / "junk.pt2").write_bytes(b"junk")
    with pytest.raises(ValueError, match="package: cannot load 'model'"):
        E.load_package(tmp_path / "junk.pt2")
    with pytest.raises(ValueError, match="kind: expected 'model' or 'step'"):
        E.load_package(path, "other")


def _run(exe, *args):
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=300)


def test_cpp_runner_matches_python(runner, sym_package, tmp_path):
    path, model = sym_package
    fused = fuse(model, impl="reference")
    single = random_keypoints((23, J_IN, 2), 5)  # float32, (T, J, F)
    batch = random_keypoints((3, 6, J_IN, 2), 6, np.float64)  # float64, (B, T, J, F), T < receptive field
    np.save(tmp_path / "single.npy", single)
    np.save(tmp_path / "batch.npy", batch)
    for name, data in (("single", single), ("batch", batch)):
        want = fused.lift(torch.from_numpy(data).float()).numpy()
        for stream in (False, True):
            out = tmp_path / f"{name}_{stream}.npy"
            p = _run(runner, path, "--input", tmp_path / f"{name}.npy", "--output", out, "--repeat", 2,
                     *(["--stream"] if stream else []))
            assert p.returncode == 0, p.stderr
            assert ("per step" if stream else "frames/s") in p.stdout and "ms" in p.stdout
            got = np.load(out)
            assert got.dtype == np.float32 and got.shape == want.shape
            assert rel_err(got, want) < 1e-5, (name, stream)


def test_cpp_runner_bad_inputs(runner, sym_package, tmp_path):
    path, _ = sym_package
    good = tmp_path / "good.npy"
    np.save(good, random_keypoints((5, J_IN, 2), 0))
    np.save(tmp_path / "joints.npy", random_keypoints((5, 16, 2), 0))
    np.save(tmp_path / "rank.npy", np.zeros((5, 34), np.float32))
    np.save(tmp_path / "int.npy", np.zeros((5, J_IN, 2), np.int32))
    np.save(tmp_path / "nan.npy", np.full((5, J_IN, 2), np.nan, np.float32))
    np.save(tmp_path / "fortran.npy", np.asfortranarray(np.zeros((5, J_IN, 2), np.float32)))
    (tmp_path / "text.npy").write_text("this is not an npy file")
    (tmp_path / "trunc.npy").write_bytes(good.read_bytes()[:-8])
    (tmp_path / "junk.pt2").write_bytes(b"PK\x03\x04 not a zip")
    ckpt_file = tmp_path / "epoch_3.bin"  # a training checkpoint (a zip archive, but no package)
    save_checkpoint(ckpt_file, make_model())
    (tmp_path / "legacy.bin").write_bytes(b"\x80\x02" + bytes(64))  # legacy torch.save: a bare pickle
    out = tmp_path / "out.npy"
    cases = [
        ((path, "--input", tmp_path / "missing.npy", "--output", out), 1, "--input: no such file"),
        ((tmp_path / "missing.pt2", "--input", good, "--output", out), 1, "package: no such file"),
        ((path, "--input", tmp_path / "joints.npy", "--output", out), 1,
         "expects 17 joints x 2 features per frame, got 16 x 2"),
        ((path, "--input", tmp_path / "rank.npy", "--output", out), 1,
         "expected keypoints of shape (frames, 17, 2) or (batch, frames, 17, 2), got (5, 34)"),
        ((path, "--input", tmp_path / "int.npy", "--output", out), 1, "unsupported dtype '<i4'"),
        ((path, "--input", tmp_path / "nan.npy", "--output", out), 1, "NaN or infinite"),
        ((path, "--input", tmp_path / "fortran.npy", "--output", out), 1, "Fortran-order"),
        ((path, "--input", tmp_path / "text.npy", "--output", out), 1, "not a .npy file"),
        ((path, "--input", tmp_path / "trunc.npy", "--output", out), 1, "data size mismatch"),
        ((tmp_path / "junk.pt2", "--input", good, "--output", out), 1, "cannot load model 'model' from package"),
        ((good, "--input", good, "--output", out), 1, "cannot load model 'model'"),
        ((ckpt_file, "--input", good, "--output", out), 1, "a training checkpoint is not one"),
        ((tmp_path / "legacy.bin", "--input", good, "--output", out), 1, "not a .pt2 package"),
        ((path, "--input", good, "--output", tmp_path / "no" / "out.npy"), 1, "--output: folder"),
        ((path, "--input", good, "--output", out, "--device", "tpu"), 1, "--device: expected cpu or cuda"),
        ((path, "--input", good), 2, "--output: required"),
        ((path, "--input", good, "--output", out, "--repeat", "0"), 2, "--repeat: expected a positive integer"),
        ((path, "--input", good, "--output", out, "--frobnicate"), 2, "unknown option '--frobnicate'"),
        ((), 2, "expected exactly one PACKAGE.pt2 argument"),
    ]
    if not torch.cuda.is_available():
        cases.append(((path, "--input", good, "--output", out, "--device", "cuda"), 1, "sees no CUDA device"))
    for args, rc, msg in cases:
        p = _run(runner, *args)
        assert p.returncode == rc and msg in p.stderr and "fastlift_run: error:" in p.stderr, (args, p.stderr)
        assert len(p.stderr.strip().splitlines()) <= 2, (args, p.stderr)  # the error (+ a usage hint), no dump
        assert not out.exists(), args
    p = _run(runner, "--help")
    assert p.returncode == 0 and "usage: fastlift_run PACKAGE.pt2" in p.stdout


# ---------------------------------------------------------------------------- slow: more packages
@pytest.mark.slow
def test_fastlift_trained_causal_stream_package(tmp_path, runner, capsys):
    """A causal model trained by ``fastlift train``, exported with ``--causal-stream``: the C++
    runner's whole-sequence and zero-delay streaming outputs equal Python's."""
    ckpt = train_checkpoint(tmp_path / "ckpt", "3,3,3", 16, causal=True)
    path = tmp_path / "causal.pt2"
    rc, out, err = run_cli(capsys, "export", "--model", ckpt, "--out", path, "--causal-stream")
    assert rc == 0, err
    assert "streaming delay 0 frames" in out and "verified against the eager model" in out
    meta = E.read_metadata(path)
    assert meta["fastlift.causal"] == "1" and meta["fastlift.delay"] == "0" and meta["fastlift.has_step"] == "1"
    assert meta["fastlift.receptive_field"] == "27" and meta["fastlift.source"] == "epoch_1.bin"
    model, arch = E.load_checkpoint(ckpt)  # causal comes from the checkpoint's fastlift record
    assert arch.causal and arch.filter_widths == [3, 3, 3] and arch.channels == 16
    x = random_keypoints((2, 31, arch.joints_in, 2), 9)
    np.save(tmp_path / "kp.npy", x)
    want = lift_sequence(model, torch.from_numpy(x))
    for stream in (False, True):
        p = _run(runner, path, "--input", tmp_path / "kp.npy", "--output", tmp_path / "o.npy",
                 *(["--stream"] if stream else []))
        assert p.returncode == 0, p.stderr
        assert rel_err(np.load(tmp_path / "o.npy"), want) < 1e-5, stream


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.bfloat16], ids=["bf16"])
def test_cpu_package_gemms_are_prepacked_onednn_linears(tmp_path, monkeypatch, dtype):
    # Read the generated wrapper: every GEMM must be a call on a weight packed at compile time
    # (a frozen constant), with the hidden layers' ReLU fused; no conv, no unpacked addmm.
    # A private Inductor cache: the wrapper read below is this compile's, not a shared cache entry.
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    compiled = []
    check = E._check_compiled
    monkeypatch.setattr(E, "_check_compiled", lambda files, what: (compiled.append(list(files)), check(files, what))[1])
    m = make_model()
    path = tmp_path / "p.pt2"
    E.export_package(m, path, dtype=dtype)
    wrappers = [f for f in compiled[0] if isinstance(f, str) and f.endswith(".wrapper.cpp")]
    assert len(wrappers) == 1, compiled[0]
    code = Path(wrappers[0]).read_text()
    calls = [line for line in code.splitlines() if "aoti_torch_cpu__linear_pointwise(" in line]
    # expand, block conv, block 1x1, shrink
    assert len(calls) == 4, sorted(set(re.findall(r"aoti_torch_cpu_[a-z_]+|cpp_fused_[a-z_0-9]+", code)))
    assert all("_frozen_param" in c for c in calls), calls
    assert sum('"relu"' in c for c in calls) == 3, calls
    assert "aoti_torch_cpu_addmm" not in code and "convolution" not in code
    x = torch.from_numpy(random_keypoints((2, 30, J_IN, 2), 5))
    got, want = E.load_package(path)[0](x), fuse(m, dtype=dtype).lift(x)
    assert rel_err(got, want) < (1e-5 if dtype == torch.float32 else 1e-2)


@pytest.mark.slow
def test_bf16_random_init_package(tmp_path, runner, capsys):
    path = tmp_path / "bf16.pt2"
    rc, out, err = run_cli(capsys, "export", "--random-init", "-arc", "3,3", "-ch", "16", "--joints-in", "5",
                           "--joints-out", "4", "--dtype", "bf16", "--out", path, "--seed", "4")
    assert rc == 0, err
    assert "RANDOMLY INITIALISED" in err and "bfloat16" in out
    compiled, meta = E.load_package(path)
    assert meta["fastlift.random_init"] == "1" and meta["fastlift.dtype"] == "bfloat16"
    assert meta["fastlift.has_step"] == "0"
    model = E.build_random_model(E.Architecture(5, 2, 4, [3, 3], 16), seed=4)
    x = random_keypoints((1, 20, 5, 2), 4)
    want = fuse(model, dtype=torch.float32, impl="reference").lift(torch.from_numpy(x))
    assert rel_err(compiled(torch.from_numpy(x)), want) < E.VERIFY_TOL[torch.bfloat16]
    np.save(tmp_path / "kp.npy", x)
    p = _run(runner, path, "--input", tmp_path / "kp.npy", "--output", tmp_path / "o.npy")
    assert p.returncode == 0, p.stderr
    assert rel_err(np.load(tmp_path / "o.npy"), want) < E.VERIFY_TOL[torch.bfloat16]
    p = _run(runner, path, "--input", tmp_path / "kp.npy", "--output", tmp_path / "o.npy", "--stream")
    assert p.returncode == 1 and "has no streaming step; export it with --stream" in p.stderr


# ---------------------------------------------------------------------------- GPU tier
@pytest.mark.gpu
def test_cuda_triton_package(tmp_path):
    """On CUDA the whole-sequence model keeps the fused Triton op in the exported graph and
    AOTInductor compiles its kernels into the package (no proxy-executor fallback)."""
    model = make_model([3, 3, 3], channels=64).cuda()
    programs, info = E.export_programs(model, device="cuda", stream=True)
    assert info["impl"] == "triton"
    ops = {str(n.target) for n in programs["model"].graph.nodes if n.op == "call_function"}
    assert any("fastlift.tconv_fwd" in o for o in ops), ops
    path = tmp_path / "cuda.pt2"
    E.export_package(model, path, device="cuda", stream=True)
    errs = E.verify_package(path, model, torch.float32, "cuda", stream=True)
    assert errs["model"] < 1e-4 and errs["step"] < 1e-4
