"""The explicit target, the one launch path and ``fastlift kernels check``.

The check compiles real kernels, which the Triton interpreter (set by conftest on CPU machines)
cannot: everything that compiles runs in a subprocess with ``TRITON_INTERPRET`` unset and a fresh
``TRITON_CACHE_DIR`` (a cold cache, as in CI).
"""
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from fastlift.cli import main
from fastlift.kernels import _common, aot
from fastlift.kernels.target import INTERPRETER, KNOWN_CUDA, Target, cuda_target, device_target, override, resolve

ROOT = Path(__file__).resolve().parents[1]
GEMM_KERNELS = ("tconv_fwd", "tconv_dgrad", "tconv_wgrad", "stream_layer")
ALL_KERNELS = GEMM_KERNELS + ("bn_act", "bn_finalize", "bn_grad_coef")
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
SPILL_FREE = ("tconv_fwd", "tconv_dgrad", "tconv_wgrad")

needs_nvidia = pytest.mark.skipif(aot.nvidia_backend_missing() is not None,
                                  reason=f"no NVIDIA back end in this Triton: {aot.nvidia_backend_missing()}")


def _env(cache: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(cache)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _check(tmp_path: Path, *args, timeout=900):
    out = tmp_path / "check.json"
    cmd = [sys.executable, "-m", "fastlift.cli", "kernels", "check", "--json", str(out), *args]
    t0 = time.time()
    proc = subprocess.run(cmd, env=_env(tmp_path / "triton-cache"), capture_output=True, text=True,
                          timeout=timeout, cwd=tmp_path)
    wall = time.time() - t0
    report = json.loads(out.read_text()) if out.exists() else None
    return proc, report, wall


# ------------------------------------------------------------------------------------ target
def test_targets_drive_tile_choice():
    h100, a100 = cuda_target(90), cuda_target(80)
    assert device_target("cpu") is INTERPRETER and not INTERPRETER.gpu
    assert h100.shared_bytes == 232448 and h100.sm_count == 132 and h100.has_tf32
    assert a100.shared_bytes < h100.shared_bytes
    # The interpreter's tiles are tiny, a GPU's are tensor-core sized; same code, different target.
    assert _common.gemm_config(8192, 1024, 3072, torch.bfloat16, INTERPRETER)["BLOCK_M"] == 32
    assert _common.gemm_config(8192, 1024, 3072, torch.bfloat16, h100)["BLOCK_M"] == 128
    # Pipeline stages shrink to fit the target's shared memory (found by the check: the bf16 dgrad
    # at 4 stages needed 168,448 B on sm_80, whose limit is 166,912 B).
    assert _common.gemm_config(8192, 1024, 3072, torch.bfloat16, h100)["num_stages"] == 4
    assert _common.gemm_config(8192, 1024, 3072, torch.bfloat16, a100)["num_stages"] == 3
    # wgrad's split of the row reduction follows the SM count of the target.
    small = Target("cuda", 90, 8, 232448)
    split_big = _common.wgrad_config(1 << 18, 1024, 1024, 1, torch.float32, h100)["SPLIT"]
    split_small = _common.wgrad_config(1 << 18, 1024, 1024, 1, torch.float32, small)["SPLIT"]
    assert split_big > split_small >= 1
    # An override wins over the device (compile-only sessions tile CPU tensors for a GPU).
    assert resolve("cpu") is INTERPRETER
    with override(h100):
        assert resolve("cpu") is h100
        assert _common.rowwise_config("cpu")["BLOCK_C"] == 128
    assert _common.rowwise_config("cpu")["BLOCK_C"] == 32
    with pytest.raises(ValueError, match="arch: expected one of"):
        cuda_target(70)
    assert set(KNOWN_CUDA) >= {80, 90}


def test_no_device_type_branches_in_launchers():
    """Tile choice takes a target: no launcher in kernels/ branches on the tensors' device type."""
    for path in (ROOT / "kernels").glob("*.py"):
        if path.name in ("target.py", "_common.py"):
            continue
        src = path.read_text()
        assert 'device.type == "cuda"' not in src and 'dev.type == "cuda"' not in src, path.name
        assert "launchable(" not in src or path.name == "launch.py", f"{path.name} launches outside launch.py"


# ------------------------------------------------------------------------------------ launch path
_COMPILE_ONLY_SCRIPT = textwrap.dedent("""
    import json, torch
    from fastlift.kernels import _common
    from fastlift.kernels.launch import compile_only, record_launches
    from fastlift.kernels.target import cuda_target
    from fastlift.kernels.tconv_fwd import tconv_fwd_launch

    seen = []
    t = cuda_target(90)
    x = torch.randn(4, 1000, 34)
    w = torch.randn(3 * 34, 1024)
    with record_launches() as log, compile_only(t, lambda k, g, a, kw: seen.append((g, kw["BLOCK_M"]))):
        y, _, _, _ = tconv_fwd_launch(x, w, taps=3, dilation=1, bias=torch.zeros(1024), relu=True)
    cfg = _common.gemm_config(4 * 998, 1024, 3 * 34, torch.float32, t)
    print(json.dumps(dict(log=[[r.kernel, list(r.grid)] for r in log], seen=seen, y=list(y.shape),
                          bm=cfg["BLOCK_M"], bn=cfg["BLOCK_N"])))
""")


def test_compile_only_launch_path_records_grid(tmp_path):
    proc = subprocess.run([sys.executable, "-c", _COMPILE_ONLY_SCRIPT], env=_env(tmp_path / "c"), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = (-(-4 * 998 // out["bm"])) * (-(-1024 // out["bn"]))
    assert out["log"] == [["tconv_fwd", [expected]]]
    assert out["seen"] == [[[expected], out["bm"]]]  # the handler got the launch, tiled for sm_90
    assert out["bm"] == 64 and out["y"] == [4, 998, 1024]


def test_compile_only_refused_under_interpreter():
    from fastlift.kernels.launch import compile_only

    if not _common.interpreter_active():
        pytest.skip("interpreter not active in this process")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        with compile_only(cuda_target(90)):
            pass


# ------------------------------------------------------------------------------------ CLI errors
def test_check_bad_arguments(tmp_path, capsys):
    assert main(["kernels", "check", "--arch", "70"]) == 2
    assert "--arch: expected one of [80, 86, 89, 90], got 70" in capsys.readouterr().err
    existing = tmp_path / "r.json"
    existing.write_text("{}")
    assert main(["kernels", "check", "--json", str(existing)]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert existing.read_text() == "{}"
    assert main(["kernels", "check", "--override", "tconv_fwd"]) == 2
    assert "--override: expected KERNEL:KEY=VALUE" in capsys.readouterr().err
    assert main(["kernels", "check", "--override", "nope:BLOCK_M=64"]) == 2
    assert "--override: expected a kernel in" in capsys.readouterr().err


def test_check_without_nvidia_backend_skips_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(aot, "nvidia_backend_missing", lambda: "triton 0.0 was installed without its NVIDIA back end")
    assert main(["kernels", "check", "--quick"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["fastlift kernels check: skipped: triton 0.0 was installed without its NVIDIA back end"]


def test_nvidia_backend_detection(monkeypatch):
    assert aot.nvidia_backend_missing() is None or "NVIDIA" in aot.nvidia_backend_missing()
    monkeypatch.setattr(aot, "_nvidia_bin", lambda tool: "/nonexistent/" + tool)
    assert "lacks ptxas" in aot.nvidia_backend_missing()


# ------------------------------------------------------------------------------------ the check
def _assert_sane(report, archs=(90,), precisions=PRECISIONS, kernels=ALL_KERNELS):
    recs = report["specializations"]
    assert recs and report["num_specializations"] == len(recs)
    groups = {(r["arch"], r["kernel"], r["precision"]) for r in recs}
    assert groups == {(a, k, p) for a in archs for k in kernels for p in precisions}
    for r in recs:
        for field in ("kernel", "arch", "dtype", "precision", "ok", "error", "shared_bytes", "registers",
                      "spill_bytes", "dot_lowering", "grid"):
            assert field in r, field
        assert r["ok"] is True and r["error"] is None, r
        limit = KNOWN_CUDA[r["arch"]].shared_bytes
        assert 0 <= r["shared_bytes"] <= limit and r["over_shared"] is False
        assert 1 <= r["registers"] <= 255 and r["spill_bytes"] >= 0
        assert r["grid"] and all(int(g) >= 1 for g in r["grid"])
        assert r["dtype"] == {"fp32": "float32", "tf32": "float32", "bf16": "bfloat16", "fp16": "float16"}[r["precision"]]
        if r["kernel"] in GEMM_KERNELS:
            assert r["shared_bytes"] > 0
            if r["precision"] == "fp32":
                assert r["dot_lowering"] == "FFMA" and r["dot_precision"] == "ieee"
            else:
                # Hopper's wgmma works on 64-row warpgroup tiles: smaller row tiles (the streaming
                # step at few streams) lower to HMMA, still tensor cores.
                rows = r["constexprs"]["BLOCK_N"] if r["kernel"] == "stream_layer" else 64
                assert r["dot_lowering"] == ("HGMMA" if r["arch"] == 90 and rows >= 64 else "HMMA"), r
            if r["precision"] == "tf32":
                assert r["dot_precision"] == "tf32"
        else:
            assert r["dot_lowering"] == "none"
        # Issue 11 spill targets for the training / whole-sequence GEMMs and the streaming step: no
        # stack or local memory in bf16, fp16 and TF32, at most 1 KB in IEEE fp32.
        if r["kernel"] in SPILL_FREE or r["kernel"] == "stream_layer":
            assert r["spill_bytes"] <= (1024 if r["precision"] == "fp32" else 0), r


@needs_nvidia
def test_quick_check_cold_cache(tmp_path):
    """``fastlift kernels check --quick --arch 90`` from a cold Triton cache (the CI check)."""
    proc, report, wall = _check(tmp_path, "--quick", "--arch", "90")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _assert_sane(report)
    assert len(report["specializations"]) == len(ALL_KERNELS) * len(PRECISIONS)  # one per kernel x precision
    assert "sm_90  tconv_fwd    bf16" in proc.stdout and "0 failed to compile" in proc.stdout
    print(f"quick check: {wall:.0f} s wall, report elapsed {report['elapsed_s']} s")


@needs_nvidia
def test_quick_check_sm80_gemm_kernels_do_not_spill(tmp_path):
    """The same quick check for an A100 (sm_80, mma.sync with register operands: more register
    pressure than sm_90's wgmma), for the three GEMM kernels the spill targets name."""
    proc, report, _ = _check(tmp_path, "--quick", "--arch", "80", *[a for k in SPILL_FREE for a in ("--kernel", k)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _assert_sane(report, archs=(80,), kernels=SPILL_FREE)
    assert len(report["specializations"]) == len(SPILL_FREE) * len(PRECISIONS)


@needs_nvidia
def test_oversized_config_is_reported_over_shared_memory(tmp_path):
    """A tile configuration that cannot fit an A100's shared memory makes the check fail."""
    proc, report, _ = _check(tmp_path, "--quick", "--arch", "80", "--precision", "bf16", "--kernel", "tconv_fwd",
                             "--override", "tconv_fwd:BLOCK_M=256,BLOCK_N=256,BLOCK_K=128,num_stages=4")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    (rec,) = report["specializations"]
    assert rec["kernel"] == "tconv_fwd" and rec["constexprs"]["BLOCK_M"] == 256
    assert rec["over_shared"] is True and rec["shared_bytes"] > KNOWN_CUDA[80].shared_bytes
    assert "FAILED sm_80 tconv_fwd bf16" in proc.stdout and "1 over the shared-memory limit" in proc.stdout


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("FASTLIFT_FULL_COMPILE_CHECK") != "1",
                    reason="the full compile check takes 30+ min on 2 cores (CI's whole budget): set "
                           "FASTLIFT_FULL_COMPILE_CHECK=1 to run it (it produced bench/results/compile-sm*.json)")
@needs_nvidia
def test_full_check_sm80_sm90(tmp_path):
    """Every specialisation of every workload compiles for both targets (~30+ min on 2 cores)."""
    proc, report, _ = _check(tmp_path, "--arch", "80", "--arch", "90", timeout=4 * 3600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _assert_sane(report, archs=(80, 90))
    assert len(report["specializations"]) > 200


# ------------------------------------------------------------------------------------ launch hygiene
_OPS_SCRIPT = textwrap.dedent("""
    import json, torch
    from torch.utils._python_dispatch import TorchDispatchMode
    import fastlift
    from fastlift.kernels.launch import compile_only, record_launches
    from fastlift.kernels.target import cuda_target

    # aten calls that launch no device kernel: allocations and views/metadata
    FREE = {"empty", "empty_like", "empty_strided", "new_empty", "detach", "view", "_unsafe_view", "permute", "t",
            "expand", "select", "slice", "unsqueeze", "squeeze", "reshape", "as_strided", "alias", "transpose",
            "unbind", "split", "_reshape_alias"}

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = {}
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            if name not in FREE:
                self.ops[name] = self.ops.get(name, 0) + 1
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    widths = [3, 3, 3, 3, 3]
    m = fastlift.TemporalModelOptimized1f(17, 2, 17, widths, channels=64, dropout=0.25, impl="triton").train()
    opt = torch.optim.Adam(m.parameters())
    x = torch.randn(8, 243, 17, 2)
    out = {}
    with compile_only(cuda_target(90)):
        for step in range(2):  # the second step is the steady state (after an optimizer step)
            opt.zero_grad(set_to_none=True)
            with record_launches() as log, Count() as c:
                m(x).sum().backward()
            with torch.no_grad():
                for p in m.parameters():
                    p.add_(0.0)  # an optimizer step changes every parameter (bumps its version)
        out["train"] = dict(launches=len(log), ops=c.ops)
        ref = fastlift.reference.TemporalModel(17, 2, 17, widths, channels=64).eval()
        f = fastlift.fuse(ref, impl="triton")
        xi = torch.randn(1, 300, 17, 2)
        with torch.no_grad():
            f(xi)
            with record_launches() as log, Count() as c:
                f(xi)
        out["infer"] = dict(launches=len(log), ops=c.ops, layers=2 + 2 * (len(widths) - 1))
    print(json.dumps(out))
""")


def test_launch_hygiene_op_counts(tmp_path):
    """Non-Triton torch ops per Triton launch, counted on CPU in compile-only mode (issue 11 targets:
    a 243f 1f training step <= 1.5 per launch, inference <= 1 per layer)."""
    proc = subprocess.run([sys.executable, "-c", _OPS_SCRIPT], env=_env(tmp_path / "c"), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    train, infer = out["train"], out["infer"]
    n_train = sum(train["ops"].values())
    n_infer = sum(infer["ops"].values())
    print(f"training step: {train['launches']} launches, {n_train} other ops {train['ops']}; "
          f"inference: {infer['launches']} launches, {n_infer} other ops {infer['ops']}")
    assert n_train <= 1.5 * train["launches"], train
    assert n_infer <= infer["layers"], infer
    assert "clone" not in infer["ops"] and "zeros" not in infer["ops"] and "zeros" not in train["ops"]
    # BN finalize returns its outputs without cloning (it cloned 4 per BN layer): what remains is one
    # weight repack per layer in forward (parameters changed), one layout change of each weight
    # gradient in backward, and the seed snapshot. The BN backward coefficients are one launch.
    assert train["ops"].get("clone", 0) <= 2 * infer["layers"] + 1, train
    assert "stack" not in train["ops"] or train["ops"]["stack"] <= infer["layers"] - 1, train


@pytest.mark.parametrize("arch", [90, 80])
def test_committed_full_reports_meet_the_targets(arch):
    """bench/results/compile-sm*.json (the README's compile table) compile everything, fit shared
    memory and meet issue 11's spill targets for every kernel and precision."""
    path = Path(__file__).resolve().parents[1] / "bench" / "results" / f"compile-sm{arch}.json"
    report = json.loads(path.read_text())
    assert report["tool"] == "fastlift kernels check" and report["archs"] == [arch] and not report["quick"]
    assert report["num_failed"] == 0 and report["num_over_shared"] == 0
    _assert_sane(report, archs=(arch,))
