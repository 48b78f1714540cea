"""Benchmark suite: result schema, check-before-time, peak table, device slug, README table,
gpu_check.sh's CPU behaviour, and pytest-benchmark tests of the CPU-visible scenarios.

The ``benchmark`` tests run once as smoke tests under pyproject's ``--benchmark-disable`` and
become real benchmarks with ``pytest tests/test_bench.py --benchmark-enable``. No test asserts
on a time.
"""
from __future__ import annotations

import copy
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fastlift
from fastlift import reference as R
from fastlift.bench import readme_table as rt
from fastlift.bench import report as rep
from fastlift.bench.harness import (TOLERANCES, BenchContext, Budget, Variant, make_reference, measure_case,
                                    random_walk, rel_err, rel_l2, summarize)
from fastlift.bench.machine import device_slug, resolve_device
from fastlift.bench.peaks import lookup_peaks, peak_tflops
from fastlift.bench.suite import make_plan, parse_precisions, run_suite
from fastlift.cli import main

REPO = Path(__file__).resolve().parents[1]

try:  # pyproject's addopts need the plugin; keep the smoke tests runnable without it anyway
    import pytest_benchmark  # noqa: F401
except ImportError:  # pragma: no cover - exercised only where pytest-benchmark is missing
    @pytest.fixture
    def benchmark():
        return lambda fn, *args, **kwargs: fn(*args, **kwargs)


CPU = torch.device("cpu")


# ------------------------------------------------------------------------------ pure helpers
@pytest.mark.parametrize("name,cores,slug", [
    ("AMD EPYC", 2, "cpu-amd-epyc-2c"),
    ("Intel(R) Xeon(R) Platinum 8480+ CPU @ 2.00GHz", 16, "cpu-intel-xeon-platinum-8480-16c"),
    ("AMD Ryzen 9 7950X 16-Core Processor", 32, "cpu-amd-ryzen-9-7950x-32c"),
    ("", 2, "cpu-generic-2c"),
])
def test_cpu_device_slug(name, cores, slug):
    assert device_slug("cpu", name=name, cores=cores) == slug


@pytest.mark.parametrize("name,slug", [("NVIDIA H100 80GB HBM3", "nvidia-h100-80gb-hbm3"),
                                       ("NVIDIA H200", "nvidia-h200"),
                                       ("NVIDIA A100-SXM4-80GB", "nvidia-a100-sxm4-80gb")])
def test_gpu_device_slug(name, slug):
    assert device_slug(torch.device("cuda", 0), name=name) == slug


def test_detected_slug_is_filename_safe():
    s = device_slug("cpu")
    assert s.startswith("cpu-") and s.endswith("c") and all(ch.isalnum() or ch == "-" for ch in s)


def test_resolve_device():
    assert resolve_device("cpu") == CPU
    dev = resolve_device("auto")
    assert dev.type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="only cpu and cuda"):
        resolve_device("meta")


@pytest.mark.parametrize("name,card,key,value", [
    ("NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM5", "bf16", 989.5),
    ("NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM5", "fp32", 67.0),
    ("NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM5", "mem_gbs", 3350.0),
    ("NVIDIA H100 PCIe", "NVIDIA H100 PCIe", "tf32", 378.0),
    ("NVIDIA H100 NVL", "NVIDIA H100 NVL", "bf16", 835.5),
    ("NVIDIA H200", "NVIDIA H200 SXM", "mem_gbs", 4800.0),
    ("NVIDIA H200 NVL", "NVIDIA H200 NVL", "fp32", 60.0),
    ("NVIDIA A100-SXM4-80GB", "NVIDIA A100 SXM4 80GB", "mem_gbs", 2039.0),
    ("NVIDIA A100 80GB PCIe", "NVIDIA A100 PCIe 80GB", "mem_gbs", 1935.0),
    ("NVIDIA A100-PCIE-40GB", "NVIDIA A100 40GB", "bf16", 312.0),
    ("NVIDIA L4", "NVIDIA L4", "bf16", 121.0),
    ("NVIDIA L40S", "NVIDIA L40S", "fp32", 91.6),
    ("Tesla V100-SXM2-32GB", "NVIDIA V100 SXM2", "fp16", 125.0),
    ("Quadro GP100", "NVIDIA Quadro GP100", "fp32", 10.3),
])
def test_peak_table_known_cards(name, card, key, value):
    p = lookup_peaks(name)
    assert p is not None and p["card"] == card and p[key] == value and p["matched"] == name


@pytest.mark.parametrize("name", [None, "", "AMD EPYC", "NVIDIA GeForce RTX 4090", "NVIDIA H100 80GB HBM3 MIG 1g.10gb",
                                  "NVIDIA GH200 480GB"])
def test_peak_table_unknown_is_none(name):
    assert lookup_peaks(name) is None


def test_peak_for_precision():
    h100 = lookup_peaks("NVIDIA H100 80GB HBM3")
    assert peak_tflops(h100, "tf32") == 494.5 and peak_tflops(h100, "fp16") == 989.5
    assert peak_tflops(lookup_peaks("Tesla V100-SXM2-16GB"), "bf16") is None
    assert peak_tflops(None, "fp32") is None


def test_budget():
    assert Budget(None).remaining() == math.inf and not Budget(None).expired()
    assert Budget(0).expired()
    b = Budget(100)
    assert b.child(5).remaining() <= 5 and b.child(None).remaining() <= 100
    assert Budget(None).child(3).remaining() <= 3


def test_summarize_and_errors():
    s = summarize([4.0, 1.0, 3.0, 2.0, 5.0])
    assert s["median"] == 3.0 and s["p25"] == 2.0 and s["p75"] == 4.0 and s["iqr"] == 2.0
    assert s["min"] == 1.0 and s["max"] == 5.0 and s["rounds"] == 5
    a = torch.tensor([1.0, -2.0, 4.0])
    assert rel_err(a, a) == 0.0
    assert rel_err(a + 0.04, a) == pytest.approx(0.01)
    assert rel_err(a[:2], a) == math.inf
    assert rel_err(torch.tensor([1.0, float("nan"), 4.0]), a) == math.inf
    assert rel_l2(a * 1.001, a) == pytest.approx(1e-3, rel=1e-3)


def test_plans_and_precisions():
    for name in ("tiny", "quick", "full"):
        for dev in (CPU, torch.device("cuda", 0)):
            p = make_plan(name, dev)
            assert p.sequence_cases and p.stream_counts and p.train_batch > 0
    assert make_plan("full", torch.device("cuda", 0)).stream_counts == [1, 8, 64, 256, 1024, 4096]
    assert make_plan("full", torch.device("cuda", 0)).train_batch == 1024
    assert {c["frames"] for c in make_plan("full", torch.device("cuda", 0)).sequence_cases} >= {1000, 100000}
    with pytest.raises(ValueError):
        make_plan("huge", CPU)
    assert parse_precisions(None, CPU) == ["fp32"]
    assert parse_precisions(None, torch.device("cuda", 0)) == ["fp32", "tf32", "fp16", "bf16"]
    assert parse_precisions("bfloat16,fp32,bf16", CPU) == ["bf16", "fp32"]
    with pytest.raises(ValueError, match="unknown precision"):
        parse_precisions("int8", CPU)


# ------------------------------------------------------------------------------ check before time
def _ctx(**kw):
    kw.setdefault("budget", Budget(None))
    return BenchContext(device=CPU, plan=make_plan("tiny", CPU), precisions=["fp32"], compile=False, **kw)


def test_measure_case_refuses_time_for_wrong_output():
    ctx = _ctx()
    ref = make_reference((3, 3), 16)
    x = random_walk(1, 30)
    expected = R.lift_sequence(ref, x)
    variants = [
        Variant("reference-fp32", "reference", "fp32", lambda: (lambda: R.lift_sequence(ref, x)), baseline=True),
        Variant("fastlift-fp32", "fastlift", "fp32", lambda: (lambda: fastlift.fuse(ref).lift(x))),
        # a wrong implementation: 1 % off everywhere
        Variant("wrong-impl", "fastlift", "fp32", lambda: (lambda: R.lift_sequence(ref, x) * 1.01)),
        # a wrong shape (drops the last frame)
        Variant("short-impl", "fastlift", "fp32", lambda: (lambda: R.lift_sequence(ref, x)[:, :-1])),
        Variant("broken-impl", "fastlift", "fp32", lambda: (lambda: (_ for _ in ()).throw(RuntimeError("boom")))),
    ]
    recs = {r["variant"]: r for r in measure_case(ctx, "sequence", "tiny", {}, variants, expected=expected,
                                                  frames_per_call=30, flops_per_call=1e6)}
    assert recs["reference-fp32"]["status"] == "ok" and recs["fastlift-fp32"]["status"] == "ok"
    assert recs["fastlift-fp32"]["check_error"] <= TOLERANCES["fp32"]
    assert set(recs["fastlift-fp32"]["speedup_vs"]) == {"reference-fp32"}
    for bad in ("wrong-impl", "short-impl"):
        r = recs[bad]
        assert r["status"] == "mismatch", r
        assert r["time_s"] is None and r["frames_per_s"] is None and r["us_per_step"] is None and r["tflops"] is None
        assert r["speedup_vs"] == {} and "tolerance" in r["reason"]
    assert recs["wrong-impl"]["check_error"] == pytest.approx(0.01, rel=1e-3)
    assert recs["broken-impl"]["status"] == "error" and "boom" in recs["broken-impl"]["reason"]
    assert recs["broken-impl"]["time_s"] is None
    assert len(ctx.results) == len(variants)


def test_measure_case_budget_exhausted_is_recorded():
    ctx = _ctx(budget=Budget(0))
    ref = make_reference((3,), 8)
    x = random_walk(1, 10)
    recs = measure_case(ctx, "sequence", "tiny", {}, [Variant("reference-fp32", "reference", "fp32",
                                                              lambda: (lambda: R.lift_sequence(ref, x)), baseline=True)])
    assert recs[0]["status"] == "skipped" and "budget" in recs[0]["reason"] and recs[0]["time_s"] is None


# ------------------------------------------------------------------------------ the tiny suite
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")

    def wrong(ref, x):
        return [Variant("wrong-impl", "fastlift", "fp32", lambda: (lambda: R.lift_sequence(ref, x) + 1.0))]

    report = run_suite(plan="tiny", device="cpu", out_dir=out, log=lambda line: None,
                       extra_variants={"sequence": wrong})
    return out, report


def test_tiny_suite_writes_valid_json_csv_png(tiny_run):
    out, report = tiny_run
    files = {k: Path(v) for k, v in report["files"].items()}
    assert set(files) == {"json", "csv", "png"}
    for p in files.values():
        assert p.exists() and p.stat().st_size > 0 and p.parent == out
    assert files["json"].name == f"{device_slug('cpu')}-tiny.json"
    data = json.loads(files["json"].read_text())
    rep.validate_report(data)
    assert data["schema"] == rep.SCHEMA and data["slug"] == device_slug("cpu")
    m = data["machine"]
    for key in ("device_name", "torch", "triton", "cpu_cores", "python", "slug"):
        assert m[key] is not None, key
    assert m["peaks"] is None  # CPU: achieved GFLOP/s only
    assert {r["scenario"] for r in data["results"]} == {"sequence", "stream", "train-step"}
    with open(files["csv"]) as f:
        lines = f.read().strip().splitlines()
    assert len(lines) == 1 + len(data["results"])
    assert files["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tiny_suite_contents(tiny_run):
    _, report = tiny_run
    res = report["results"]
    ok = [r for r in res if r["status"] == "ok"]
    for r in ok:
        t = r["time_s"]
        assert t["median"] > 0 and r["frames_per_s"] > 0 and r["us_per_step"] > 0 and r["tflops"] > 0
        assert r["pct_peak"] is None  # CPU
        if r["scenario"] != "stream":
            assert t["rounds"] >= 1 and len(t["samples"]) == t["rounds"] and t["p25"] <= t["median"] <= t["p75"]
    variants = {(r["scenario"], r["variant"]) for r in ok}
    for v in [("sequence", "reference-fp32"), ("sequence", "fastlift-fp32"), ("stream", "fastlift-stream-fp32"),
              ("stream", "reference-window-fp32"), ("stream", "reference-whole-fp32"), ("train-step", "reference-fp32"),
              ("train-step", "fastlift-fp32"), ("train-step", "reference-fp32+host-loader"),
              ("train-step", "fastlift-fp32+host-loader")]:
        assert v in variants, v
    stream = [r for r in ok if r["variant"] == "fastlift-stream-fp32"]
    assert {r["params"]["streams"] for r in stream} == {1, 4}
    for r in stream:
        assert set(r["latency_us"]) >= {"p50", "p90", "p99", "max"}
        assert set(r["speedup_vs"]) == {"reference-window-fp32", "reference-whole-fp32"}
        assert r["check_error"] <= TOLERANCES["fp32"]
    seq_fast = [r for r in ok if r["scenario"] == "sequence" and r["variant"] == "fastlift-fp32"]
    assert all("reference-fp32" in r["speedup_vs"] for r in seq_fast)
    # the injected wrong implementation: checked, refused, never timed
    wrong = [r for r in res if r["variant"] == "wrong-impl"]
    assert len(wrong) == 2 and all(r["status"] == "mismatch" and r["time_s"] is None for r in wrong)
    assert all(r["check_error"] > TOLERANCES["fp32"] for r in wrong)
    table = rep.format_table(report)
    assert "== sequence ==" in table and "== stream ==" in table and "== train-step ==" in table
    assert "MISMATCH" in table and "no time reported" in table
    assert any("torch.compile baselines skipped" in n for n in report["notes"])


def test_report_validation_catches_a_timed_mismatch(tiny_run):
    _, report = tiny_run
    bad = copy.deepcopy(report)
    r = next(x for x in bad["results"] if x["status"] == "mismatch")
    r["frames_per_s"] = 123.0
    with pytest.raises(ValueError, match="mismatch but frames_per_s is reported"):
        rep.validate_report(bad)
    bad = copy.deepcopy(report)
    r = next(x for x in bad["results"] if x["status"] == "ok" and x["check_tolerance"])
    r["check_error"] = r["check_tolerance"] * 2
    with pytest.raises(ValueError, match="exceeds tolerance"):
        rep.validate_report(bad)
    bad = copy.deepcopy(report)
    del bad["results"][0]["time_s"]
    with pytest.raises(ValueError, match="missing keys"):
        rep.validate_report(bad)


def test_cli_scenarios_alone_merge_into_one_file(tmp_path, capsys):
    rc = main(["bench", "--plan", "tiny", "--scenario", "sequence", "--device", "cpu", "--out", str(tmp_path),
               "--quiet", "--no-png"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "== sequence ==" in out and "fastlift-fp32" in out
    path = tmp_path / f"{device_slug('cpu')}-tiny.json"
    first = json.loads(path.read_text())
    assert {r["scenario"] for r in first["results"]} == {"sequence"}
    rc = main(["bench", "--plan", "tiny", "--scenario", "stream", "--out", str(tmp_path), "--quiet", "--no-png",
               "--device", "cpu"])
    assert rc == 0
    merged = json.loads(path.read_text())
    rep.validate_report(merged)
    assert {r["scenario"] for r in merged["results"]} == {"sequence", "stream"}
    assert [r["run_id"] for r in merged["runs"]] == [1, 2]
    # --replot rebuilds CSV/PNG from the JSON alone
    rc = main(["bench", "--replot", str(path)])
    assert rc == 0 and path.with_suffix(".csv").exists() and path.with_suffix(".png").exists()


def test_cli_rejects_bad_arguments(capsys):
    assert main(["bench", "--scenario", "warp-speed", "--plan", "tiny"]) == 2
    assert "--scenario" in capsys.readouterr().err
    assert main(["bench", "--dtype", "int4", "--plan", "tiny", "--device", "cpu"]) == 2
    assert main(["bench", "--replot", "/nonexistent/x.json"]) == 2


# ------------------------------------------------------------------------------ README table
def _fake_gpu_report(cpu_report: dict) -> dict:
    g = copy.deepcopy(cpu_report)
    g["slug"] = "nvidia-h100-80gb-hbm3"
    g["machine"].update(device_type="cuda", device_name="NVIDIA H100 80GB HBM3", slug=g["slug"],
                        peaks=lookup_peaks("NVIDIA H100 80GB HBM3"))
    return g


def test_readme_table_render_and_rewrite(tiny_run, tmp_path):
    _, report = tiny_run
    results = tmp_path / "results"
    results.mkdir()
    # tiny outputs are ignored; a quick run is used when there is no full run of the device
    rep.write_json(report, results / f"{report['slug']}-tiny.json")
    assert "No benchmark results yet" in rt.render(results)
    quick = copy.deepcopy(report)
    rep.write_json(quick, results / f"{report['slug']}-quick.json")
    rep.write_json(_fake_gpu_report(report), results / "nvidia-h100-80gb-hbm3.json")
    block = rt.render(results)
    assert "| Card |" in block and "NVIDIA H100 80GB HBM3" in block and "CPU (" in block
    assert "150,000" in block and "GP100" in block and "989.5 TFLOP/s bf16" in block
    assert "· quick" in block  # the CPU row comes from the quick file and says so
    for scen in ("whole sequence", "streaming step", "training step", "data + training"):
        assert scen in block, scen
    assert block.index("NVIDIA H100") < block.index("CPU (")  # GPUs first
    # rewrite a marked block, leave the rest alone, idempotent
    readme = tmp_path / "README.md"
    readme.write_text(f"# fastlift\n\nintro\n\n{rt.START}\nold table\n{rt.END}\n\nafter\n")
    assert rt.main(["--results", str(results), "--check", str(readme)]) == 1
    assert rt.main(["--results", str(results), "--write", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# fastlift\n\nintro\n\n" + rt.START) and text.endswith(rt.END + "\n\nafter\n")
    assert "old table" not in text and "NVIDIA H100 80GB HBM3" in text
    assert rt.main(["--results", str(results), "--check", str(readme)]) == 0
    assert rt.rewrite_block(text, block) == text
    with pytest.raises(ValueError, match="exactly one"):
        rt.rewrite_block("no markers here", block)
    with pytest.raises(ValueError):
        rt.rewrite_block(f"{rt.END}\n{rt.START}", block)
    (tmp_path / "plain.md").write_text("nothing\n")
    assert rt.main(["--results", str(results), "--write", str(tmp_path / "plain.md")]) == 2


def test_committed_results_are_valid_and_render():
    results = REPO / "bench" / "results"
    files = sorted(results.glob("*.json"))
    checked = 0
    for p in files:
        data = json.loads(p.read_text())
        if p.name.startswith("compile-"):  # `fastlift kernels check` reports (tests/test_compile_check.py)
            assert data["tool"] == "fastlift kernels check" and data["specializations"], p.name
        elif data.get("benchmark") == "ddp_scaling":  # bench/ddp_scaling.py (tests/test_distributed.py)
            assert data["runs"] and data["host"], p.name
        elif data.get("tool") == "python -m fastlift.bench.cpu_ceiling":  # tests/test_cpu_ceiling.py
            assert data["runs"] and all(r["ceiling"]["fp32"] > 0 and r["cpu_id"] for r in data["runs"]), p.name
        else:
            rep.validate_report(data)
            checked += 1
    assert checked >= 2  # the CPU full and quick suites are committed
    block = rt.render(results)
    assert block.startswith("<!-- generated")


# ------------------------------------------------------------------------------ gpu_check.sh
def _bash():
    bash = shutil.which("bash")
    if bash is None or shutil.which("timeout") is None:
        pytest.skip("needs bash and coreutils timeout")
    return bash


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a GPU")
def test_gpu_check_without_gpu_reports_and_stops(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable)
    r = subprocess.run([_bash(), str(REPO / "bench" / "gpu_check.sh"), str(tmp_path / "out")], capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == 4, r.stdout[-2000:] + r.stderr[-2000:]
    assert "no CUDA GPU" in r.stdout
    status = json.loads((tmp_path / "out" / "status.json").read_text())
    assert status["gpu"] is False and status["steps"][-1]["rc"] == 4
    assert (tmp_path / "out" / "logs" / "environment.log").exists()


@pytest.mark.slow  # ~40 s: a nested pytest collection and a tiny benchmark run
def test_gpu_check_dry_run_on_cpu(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, GPU_CHECK_TOTAL_S="400")
    out = tmp_path / "out"
    r = subprocess.run([_bash(), str(REPO / "bench" / "gpu_check.sh"), str(out), "--dry-run"], capture_output=True,
                       text=True, env=env, timeout=600)
    log = r.stdout[-4000:] + r.stderr[-2000:]
    assert r.returncode == 0, log
    status = json.loads((out / "status.json").read_text())
    steps = {s["step"]: s for s in status["steps"]}
    assert status["dry_run"] is True and status["install"] == "existing"
    assert steps["import"]["rc"] == 0 and steps["pytest-gpu"]["rc"] == 0 and steps["bench"]["rc"] == 0, steps
    assert steps["precompile"]["rc"] == 0 and (out / "precompile.json").exists(), steps
    assert steps["pytest-rest"]["note"] == "skipped: dry run"
    produced = {p.suffix for p in (out / "results").iterdir()}
    assert {".json", ".csv", ".png"} <= produced
    assert (out / "junit-gpu.xml").exists() and (out / "summary.txt").exists()
    # the results of a dry run are "-tiny" files, which the README table ignores
    assert "No benchmark results yet" in (out / "readme_table.md").read_text()
    # a dry run never copies into the committed results (its files are the "-tiny" plan's)
    assert not list((REPO / "bench" / "results").glob("*-tiny.*"))


# ------------------------------------------------------------------------------ pytest-benchmark
@pytest.fixture(scope="module")
def small_model():
    return make_reference((3, 3, 3), 64)


def test_benchmark_sequence_reference(benchmark, small_model):
    x = random_walk(1, 400)
    out = benchmark(R.lift_sequence, small_model, x)
    assert out.shape == (1, 400, 17, 3)


def test_benchmark_sequence_fastlift(benchmark, small_model):
    x = random_walk(1, 400)
    fused = fastlift.fuse(small_model)
    assert not fused.uses_kernels(x)  # CPU: the folded torch path, never the interpreter
    assert rel_err(fused.lift(x), R.lift_sequence(small_model, x)) < TOLERANCES["fp32"]  # check before timing
    out = benchmark(fused.lift, x)
    assert out.shape == (1, 400, 17, 3)


def test_benchmark_stream_step(benchmark, small_model):
    from fastlift.bench.scenario_stream import gate_check
    from fastlift.streaming import StreamingLifter

    n = 8
    assert gate_check(_ctx(), small_model, n, "fp32") < TOLERANCES["fp32"]  # check before timing
    eng = StreamingLifter(small_model, n)
    slots = torch.tensor([eng.open() for _ in range(n)])
    frames = random_walk(n, 64)
    for t in range(eng.delay + 1):  # steady state: every stream past the delay
        eng.push(slots, frames[:, t].contiguous())
    state = {"t": eng.delay + 1}

    def step():
        out = eng.push(slots, frames[:, state["t"] % 64].contiguous())
        state["t"] += 1
        return out

    out = benchmark(step)
    assert out.poses.shape == (n, 17, 3)


def test_benchmark_train_step(benchmark):
    from fastlift.bench.scenario_train import _Trainer

    base = make_reference((3, 3, 3), 64, one_f=True, eval_mode=False)
    model = fastlift.TemporalModelOptimized1f(17, 2, 17, [3, 3, 3], channels=64, dropout=0.25, impl="auto")
    model.load_state_dict(base.state_dict())
    model.train()
    x, y = torch.randn(32, 27, 17, 2), torch.randn(32, 1, 17, 3)
    assert not model.uses_kernels(x)
    ref_out, ref_grads = _Trainer(copy.deepcopy(base)).check_pass(x, y)
    tr = _Trainer(model)
    out, grads = tr.check_pass(x, y)  # check before timing
    assert rel_err(out, ref_out) < TOLERANCES["fp32"] and rel_l2(grads, ref_grads) < 1e-3
    loss = benchmark(tr.step, x, y)
    assert torch.isfinite(loss)


# ------------------------------------------------------------------------------ exported package
def test_export_ratio_is_recorded_against_fuse_lift():
    from fastlift.bench.harness import BenchContext, Budget, new_result
    from fastlift.bench.scenario_sequence import _export_ratio

    ctx = BenchContext(device=torch.device("cpu"), plan=make_plan("tiny", torch.device("cpu")), precisions=["fp32"],
                       compile=False, budget=Budget(None))
    recs = [new_result(scenario="sequence", case="c", params={}, variant=v, family=f, precision="fp32",
                       baseline=False, label=v, status="ok", frames_per_call=1.0, flops_per_call=0.0,
                       frames_per_s=fps) for v, f, fps in (("fastlift-fp32", "fastlift", 200.0),
                                                           ("export-aoti-fp32", "export", 150.0))]
    bf16 = [new_result(scenario="sequence", case="c", params={}, variant=v, family=f, precision="bf16",
                       baseline=False, label=v, status="ok", frames_per_call=1.0, flops_per_call=0.0,
                       frames_per_s=fps) for v, f, fps in (("fastlift-bf16", "fastlift", 400.0),
                                                           ("export-aoti-bf16", "export", 420.0))]
    _export_ratio(ctx, recs + bf16)
    assert recs[1]["extra"]["vs_fastlift_fp32"] == pytest.approx(0.75)
    assert "vs_fastlift_fp32" not in recs[0]["extra"]
    # bf16 packages are compared with the bf16 executor, not with fp32.
    assert bf16[1]["extra"]["vs_fastlift_bf16"] == pytest.approx(1.05) and "vs_fastlift_fp32" not in bf16[1]["extra"]


@pytest.mark.slow
def test_tiny_suite_with_the_exported_package(tmp_path):
    """``--export``: the AOTInductor package is checked against the reference and timed beside
    ``fuse(...).lift`` (AOTInductor compiles one small model: tens of seconds)."""
    report = run_suite(scenarios=["sequence"], plan="tiny", device="cpu", out_dir=tmp_path, log=lambda line: None,
                       export=True, write_png=False, precisions="fp32,bf16")
    for prec in ("fp32", "bf16"):
        exp = [r for r in report["results"] if r["variant"] == f"export-aoti-{prec}"]
        assert exp and all(r["status"] == "ok" and r["family"] == "export" for r in exp), exp
        for r in exp:
            assert r["check_error"] <= TOLERANCES[prec] and r["extra"][f"vs_fastlift_{prec}"] > 0
            assert "reference-fp32" in r["speedup_vs"]
    assert report["runs"][-1]["export"] is True


def test_tiny_suite_cpu_bf16_variants(tmp_path):
    """``--dtype fp32,bf16`` on CPU: fastlift bf16 beside the fp32 reference in every scenario, the
    nativeness of bf16 recorded, and the README table gets a bf16 row per scenario."""
    from fastlift.precision import cpu_native

    report = run_suite(plan="tiny", device="cpu", precisions="fp32,bf16", out_dir=tmp_path, log=lambda line: None,
                       write_png=False)
    ok = {(r["scenario"], r["variant"]): r for r in report["results"] if r["status"] == "ok"}
    for v in [("sequence", "fastlift-bf16"), ("sequence", "reference-autocast-bf16"), ("stream", "fastlift-stream-bf16"),
              ("train-step", "fastlift-autocast-bf16"), ("sequence", "fastlift-fp32")]:
        assert v in ok, v
    seq = ok[("sequence", "fastlift-bf16")]
    assert "reference-fp32" in seq["speedup_vs"] and 0 < seq["check_error"] <= TOLERANCES["bf16"]
    assert report["machine"]["cpu_bf16_native"] == cpu_native(torch.bfloat16)
    assert any(n.startswith("CPU bf16: ") for n in report["notes"])
    rows = rt._rows(report)
    for scen in ("whole sequence", "streaming step", "training step"):
        precs = [r[3] for r in rows if r[1] == scen]
        assert any("bf16" in v for v in precs) and any("bf16" not in v for v in precs), (scen, precs)
