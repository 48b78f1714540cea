"""Tile autotuning (fastlift.kernels.tuning): config spaces, pruning, cache keys, use after warm-up.

Timing needs a GPU, so these tests use a fake timer (a function of the launch keywords) and fake
compile facts; the launches themselves are the real launchers', in a compile-only session for an
H100 target (nothing runs: the handler only records). Compile-only sessions cannot run under the
Triton interpreter, which conftest enables on CPU machines, so those parts run in a subprocess.
"""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from fastlift.kernels import _common, tuning
from fastlift.kernels.target import INTERPRETER, cuda_target

ROOT = Path(__file__).resolve().parents[1]


def _env(cache: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(cache)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


# ------------------------------------------------------------------------------------ pure functions
@pytest.mark.parametrize("kernel", sorted(tuning.TUNABLE))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_space_is_small_starts_with_heuristic_and_tunes_only_safe_keywords(kernel, dtype):
    t = cuda_target(90)
    if kernel == "tconv_wgrad":
        h = _common.wgrad_config(8192, 1024, 1024, 3, dtype, t)
    elif kernel == "tconv_dgrad":
        h = _common.dgrad_config(8192, 1024, 3072, dtype, t)
    else:
        h = _common.gemm_config(8192, 1024, 3072, dtype, t)
    sp = tuning.space(kernel, h, {}, t)
    assert 2 <= len(sp) <= tuning.MAX_SPACE
    assert sp[0] == {k: h[k] for k in tuning.TUNABLE[kernel]}  # the heuristic is always a candidate
    assert all(set(c) == set(tuning.TUNABLE[kernel]) for c in sp)
    assert len({json.dumps(c, sort_keys=True) for c in sp}) == len(sp)  # no duplicates
    # BLOCK_M (BN partial tiling) and SPLIT (wgrad's summation order) are never tuned.
    assert all("BLOCK_M" not in c and "SPLIT" not in c for c in sp)


def test_shrink_epilogue_keeps_its_column_tile():
    t = cuda_target(90)
    h = _common.gemm_config(4000, 1024, 1024, torch.float16, t)
    assert any(c["BLOCK_N"] != h["BLOCK_N"] for c in tuning.space("tconv_fwd", h, {"SHRINK": False}, t))
    assert all(c["BLOCK_N"] == h["BLOCK_N"] for c in tuning.space("tconv_fwd", h, {"SHRINK": True}, t))
    with pytest.raises(ValueError, match="kernel: expected one of"):
        tuning.space("bn_act", h, {}, t)


def test_buckets_and_site_keys():
    assert [tuning.bucket(v) for v in (1, 16, 17, 1000, 1024, 1025)] == [16, 16, 32, 1024, 1024, 2048]
    h100, a100 = cuda_target(90), cuda_target(80)
    key = lambda m, dt=torch.bfloat16, t=h100, fl=None: tuning.site_key(  # noqa: E731
        "tconv_fwd", fl or {"STATS": True}, (m, 1024, 3072), dt, t)
    assert key(1000) == key(1020)  # same bucket
    assert key(1000) != key(1025)
    assert key(1000) != key(1000, torch.float16)
    assert key(1000) != key(1000, t=a100)
    assert key(1000) != key(1000, fl={"STATS": False})
    with _common.fp32_precision("ieee"):
        ieee = key(1000, torch.float32)
    with _common.fp32_precision("tf32"):
        tf32 = key(1000, torch.float32)
    assert ieee != tf32  # IEEE and TF32 fp32 are different kernels


def test_pick_falls_back_to_the_heuristic_on_cpu_and_when_untuned():
    h = _common.gemm_config(4000, 1024, 1024, torch.float32, INTERPRETER)
    flags = {"STATS": True}
    key_cpu = tuning.site_key("tconv_fwd", flags, (4000, 1024, 1024), torch.float32, INTERPRETER)
    tuning._CACHE[key_cpu] = {"BLOCK_N": 16, "BLOCK_K": 16, "num_warps": 4, "num_stages": 2}
    try:
        # The interpreter (and any CPU device) always gets the heuristic, whatever is cached.
        assert tuning.pick("tconv_fwd", h, flags, (4000, 1024, 1024), torch.float32, "cpu") is h
        h100 = cuda_target(90)
        hg = _common.gemm_config(4000, 1024, 1024, torch.float32, h100)
        assert tuning.pick("tconv_fwd", hg, flags, (4000, 1024, 1024), torch.float32, h100) == hg  # untuned
        key = tuning.site_key("tconv_fwd", flags, (4000, 1024, 1024), torch.float32, h100)
        tuning._CACHE[key] = {"BLOCK_N": 64, "BLOCK_K": 32, "num_warps": 4, "num_stages": 2}
        got = tuning.pick("tconv_fwd", hg, flags, (4000, 1024, 1024), torch.float32, h100)
        assert got["BLOCK_N"] == 64 and got["num_warps"] == 4 and got["BLOCK_M"] == hg["BLOCK_M"]
        with tuning.disabled():
            assert tuning.pick("tconv_fwd", hg, flags, (4000, 1024, 1024), torch.float32, h100) == hg
    finally:
        tuning.clear()


def test_tune_on_cpu_tunes_nothing_and_keeps_the_heuristic():
    """Under the interpreter (CPU) tune() finds no tunable site: launches keep the heuristic."""
    if not _common.interpreter_active():
        pytest.skip("needs the Triton interpreter (CPU machine)")
    from fastlift.kernels.launch import record_launches
    from fastlift.kernels.tconv_fwd import tconv_fwd_launch

    x, w = torch.randn(2, 40, 8), torch.randn(3 * 8, 16)
    calls = []
    with record_launches() as log:
        sites = tuning.tune(lambda: tconv_fwd_launch(x, w, taps=3), timer=lambda run, meta: calls.append(1) or 1.0,
                            facts=lambda *a: {})
    assert sites == [] and calls == [] and not tuning.cached()
    assert len(log) == 1 and log[0].meta["BLOCK_M"] == 32 and log[0].meta["num_warps"] == 1


def test_save_load_roundtrip_and_bad_file(tmp_path):
    h100 = cuda_target(90)
    key = tuning.site_key("tconv_dgrad", {"GPRO": 1}, (8192, 1024, 3072), torch.bfloat16, h100)
    tuning._CACHE[key] = {"BLOCK_N": 64, "BLOCK_K": 64, "num_warps": 8, "num_stages": 3}
    try:
        path = tmp_path / "tune.json"
        tuning.save(str(path))
        tuning.clear()
        assert tuning.load(str(path)) == 1 and tuning.cached() == {key: {"BLOCK_N": 64, "BLOCK_K": 64, "num_warps": 8,
                                                                          "num_stages": 3}}
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({tuning._key_to_json(key): {"BLOCK_M": 256}}))
        with pytest.raises(ValueError, match="expected a subset of"):
            tuning.load(str(bad))
        with pytest.raises(FileNotFoundError, match="path: no tuning cache"):
            tuning.load(str(tmp_path / "missing.json"))
    finally:
        tuning.clear()


# ------------------------------------------------------------------------------------ warm-up in compile-only mode
_TUNE_SCRIPT = textwrap.dedent("""
    import json, torch
    from fastlift.kernels import tuning, _common
    from fastlift.kernels.launch import compile_only, record_launches
    from fastlift.kernels.target import cuda_target
    from fastlift.kernels.tconv_fwd import tconv_fwd_launch
    from fastlift.kernels.tconv_wgrad import tconv_wgrad_launch

    t = cuda_target(90)
    x = torch.randn(4, 500, 64, dtype=torch.bfloat16)
    w = torch.randn(3 * 64, 256, dtype=torch.bfloat16)
    g = torch.randn(4, 498, 256, dtype=torch.bfloat16)
    facts_calls, timed = [], []

    def facts(kernel, grid, args, kw):
        # Fake compile facts: four warps "spill", eight BLOCK_K=32 fwd steps "exceed" shared memory.
        facts_calls.append(dict(kw))
        if kw["num_warps"] == 4:
            return dict(spill_bytes=96, shared_bytes=1000)
        if kw.get("BLOCK_K") == 32 and "BLOCK_M" in kw:
            return dict(spill_bytes=0, shared_bytes=t.shared_bytes + 1)
        if kw.get("num_stages") == 5:
            raise RuntimeError("out of resources")
        return dict(spill_bytes=0, shared_bytes=1000)

    def timer(run, meta):
        run()
        timed.append(dict(meta))
        # Fake timing: fewer pipeline stages and narrower column tiles are "faster".
        return meta["num_stages"] + meta["BLOCK_N"] / 1000.0

    def step():
        tconv_fwd_launch(x, w, taps=3, stats=True)
        tconv_wgrad_launch(x, g, taps=3)

    out = {}
    with compile_only(t):
        with record_launches() as before:
            step()
        sites = tuning.tune(step, timer=timer, facts=facts)
        with record_launches() as after:
            step()
        with record_launches() as other_bucket:  # 4x the rows: another bucket, untuned -> heuristic
            tconv_fwd_launch(torch.randn(16, 500, 64, dtype=torch.bfloat16), w, taps=3, stats=True)
        with tuning.disabled(), record_launches() as disabled:
            step()
        again = tuning.tune(step, timer=timer, facts=facts)  # cached: nothing re-measured
    out["before"] = [r.meta for r in before]
    out["after"] = [r.meta for r in after]
    out["other_bucket"] = [r.meta for r in other_bucket]
    out["disabled"] = [r.meta for r in disabled]
    out["sites"] = [dict(kernel=s.kernel, heuristic=s.heuristic, space=s.space,
                         results=[[c, st, sec] for c, st, sec, _ in s.results]) for s in sites]
    out["again"] = [len(s.results) for s in again]
    out["cached"] = [[k[0], v] for k, v in tuning.cached().items()]
    out["timed"] = len(timed)
    print(json.dumps(out))
""")


def _keys(meta, kernel):
    return {k: meta[k] for k in tuning.TUNABLE[kernel]}


def test_warmup_prunes_times_caches_and_launches_use_the_winner(tmp_path):
    proc = subprocess.run([sys.executable, "-c", _TUNE_SCRIPT], env=_env(tmp_path / "c"), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    sites = {s["kernel"]: s for s in out["sites"]}
    assert set(sites) == {"tconv_fwd", "tconv_wgrad"}
    for name, site in sites.items():
        assert len(site["results"]) == len(site["space"])  # every candidate was tried once
        ok = [(c, sec) for c, st, sec in site["results"] if st == "ok"]
        for c, st, sec in site["results"]:
            heur = c == site["space"][0]
            if c["num_warps"] == 4 and not heur:
                assert st.startswith("pruned: spills 96 B"), (name, c, st)
            elif name == "tconv_fwd" and c["BLOCK_K"] == 32 and not heur:
                assert st.startswith("pruned: shared memory"), (name, c, st)
            elif c["num_stages"] == 5:
                assert st.startswith("pruned: compile error: RuntimeError: out of resources"), (name, c, st)
            else:
                assert st == "ok" and sec is not None, (name, c, st)
        winner = min(ok, key=lambda cs: cs[1])[0]
        # The fake timer prefers fewer stages, then narrower column tiles.
        assert winner["num_stages"] == min(c["num_stages"] for c, _ in ok)
        cached = dict((k, v) for k, v in out["cached"])[name]
        assert cached == winner
        idx = 0 if name == "tconv_fwd" else 1
        assert _keys(out["after"][idx], name) == winner  # the launch after warm-up uses it
        assert _keys(out["disabled"][idx], name) == _keys(out["before"][idx], name)  # heuristic
        assert _keys(out["before"][idx], name) == site["space"][0]
    # BLOCK_M (BN partial tiling) never moves; another bucket is untuned and keeps the heuristic.
    assert out["after"][0]["BLOCK_M"] == out["before"][0]["BLOCK_M"]
    assert _keys(out["other_bucket"][0], "tconv_fwd") == sites["tconv_fwd"]["space"][0]
    assert out["again"] == [0, 0]


# ------------------------------------------------------------------------------------ pruning by real compiles
_AOT_SCRIPT = textwrap.dedent("""
    import json, torch
    from fastlift.kernels import _common, tuning
    from fastlift.kernels.aot import Compiler
    from fastlift.kernels.launch import compile_only
    from fastlift.kernels.target import cuda_target
    from fastlift.kernels.tconv_fwd import tconv_fwd_launch
    from fastlift.kernels.tconv_wgrad import tconv_wgrad_launch

    t = cuda_target(80)
    base_space = tuning.space

    def space(kernel, h, flags, target):
        # The heuristic plus one known-bad neighbour per site: wgrad's IEEE-fp32 tiles before
        # issue 11 (128 x 128 x 32: ptxas spilled ~5-6 KB) and a forward tile whose four stages of
        # 64x128 + 128x256 bf16 operands need more than an A100's 163 KB of shared memory.
        h0 = base_space(kernel, h, flags, target)[0]
        bad = (dict(h0, BLOCK_C=128, BLOCK_R=32) if kernel == "tconv_wgrad"
               else dict(h0, BLOCK_N=256, BLOCK_K=128, num_stages=4))
        return [h0, bad]

    tuning.space = space
    x = torch.randn(2, 243, 1024)
    g, z = torch.randn(2, 81, 1024), torch.randn(2, 81, 1024)
    gcoef, seed = torch.randn(6, 1024), torch.zeros(1, dtype=torch.int64)
    xh, wh = torch.randn(2, 300, 1024, dtype=torch.bfloat16), torch.randn(1024, 1024, dtype=torch.bfloat16)

    def step():
        with _common.fp32_precision("ieee"):
            tconv_wgrad_launch(x, g, taps=3, stride=3, z=z, gcoef=gcoef, g_p=0.25, seed=seed)
        tconv_fwd_launch(xh, wh, taps=1)

    with Compiler(t, select=set()) as comp, compile_only(t, comp):
        sites = tuning.tune(step, timer=lambda run, meta: 0.0, facts=comp.facts)
    print(json.dumps([dict(kernel=s.kernel, results=[[c, st, f] for c, st, _, f in s.results]) for s in sites]
                     + [{"cached": [[k[0], v] for k, v in tuning.cached().items()]}]))
""")


@pytest.mark.slow
@pytest.mark.skipif(__import__("fastlift.kernels.aot", fromlist=["x"]).nvidia_backend_missing() is not None,
                    reason="no NVIDIA back end in this Triton")
def test_space_pruned_by_real_compiles_for_a100(tmp_path):
    """tune() with the compile check's facts (ptxas for sm_80, no GPU): candidates that spill or
    exceed shared memory are dropped, the spill-free heuristic wins."""
    proc = subprocess.run([sys.executable, "-c", _AOT_SCRIPT], env=_env(tmp_path / "c"), capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    *sites, cached = json.loads(proc.stdout.strip().splitlines()[-1])
    by = {s["kernel"]: s["results"] for s in sites}
    (h_w, st_w, f_w), (bad_w, st_bw, f_bw) = by["tconv_wgrad"]
    assert st_w == "ok" and f_w["spill_bytes"] == 0 and f_w["dot_lowering"] == "FFMA"
    assert st_bw.startswith("pruned: spills") and f_bw["spill_bytes"] > 1024, f_bw
    (h_f, st_f, f_f), (bad_f, st_bf, f_bf) = by["tconv_fwd"]
    assert st_f == "ok" and f_f["spill_bytes"] == 0 and f_f["dot_lowering"] == "HMMA"
    assert st_bf.startswith("pruned: shared memory") and f_bf["shared_bytes"] > cuda_target(80).shared_bytes, f_bf
    assert dict((k, v) for k, v in cached["cached"]) == {"tconv_wgrad": h_w, "tconv_fwd": h_f}


# ------------------------------------------------------------------------------------ entry points
def test_tune_cli_needs_a_cuda_device(tmp_path, capsys):
    from fastlift.cli import main

    out = tmp_path / "tiles.json"
    assert main(["kernels", "tune", "-o", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "--device: tiles are tuned by timing kernels on a CUDA GPU, got cpu" in err and not out.exists()
    assert main(["kernels", "tune", "-o", str(out), "--device", "cpu", "--batch", "0"]) == 2
    assert "--batch: expected a positive integer, got 0" in capsys.readouterr().err


def test_cache_file_from_the_environment_is_loaded_at_the_first_gpu_launch(tmp_path, monkeypatch):
    h100 = cuda_target(90)
    flags, dims = {"GPRO": 1, "EPI_BN": True}, (8192, 1024, 3072)
    key = tuning.site_key("tconv_dgrad", flags, dims, torch.float16, h100)
    path = tmp_path / "tiles.json"
    tuning._CACHE[key] = {"BLOCK_N": 64, "BLOCK_K": 32, "num_warps": 8, "num_stages": 2}
    tuning.save(str(path))
    tuning.clear()
    h = _common.dgrad_config(*dims, torch.float16, h100)
    monkeypatch.setenv(tuning.CACHE_ENV, str(path))
    monkeypatch.setattr(tuning, "_AUTOLOADED", [False])
    try:
        assert tuning.pick("tconv_dgrad", h, flags, dims, torch.float16, "cpu") is h  # CPU: not even loaded
        assert not tuning.cached()
        got = tuning.pick("tconv_dgrad", h, flags, dims, torch.float16, h100)
        assert got == {**h, "BLOCK_N": 64, "BLOCK_K": 32, "num_stages": 2}
    finally:
        tuning.clear()
