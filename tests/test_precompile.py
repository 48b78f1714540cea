"""``fastlift kernels warmup`` (the precompile step of bench/gpu_check.sh) and the script's syntax.

The warm-up compiles real kernels, which the Triton interpreter (set by conftest on CPU machines)
cannot: what compiles runs in a subprocess with ``TRITON_INTERPRET`` unset and a private
``TRITON_CACHE_DIR``.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fastlift.cli import main
from fastlift.kernels import aot
from fastlift.kernels_cli import WarmShare, plan_warmup

ROOT = Path(__file__).resolve().parents[1]
needs_nvidia = pytest.mark.skipif(aot.nvidia_backend_missing() is not None,
                                  reason=f"no NVIDIA back end in this Triton: {aot.nvidia_backend_missing()}")


def _warmup(tmp_path: Path, cache: Path, *args, timeout=600):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(cache)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    out = tmp_path / f"warmup-{len(list(tmp_path.glob('warmup-*.json')))}.json"
    proc = subprocess.run([sys.executable, "-m", "fastlift.cli", "kernels", "warmup", "--arch", "90", "--json", str(out),
                           *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def test_plan_warmup_splits_and_budgets():
    # 100 specialisations over 16 workers: 7 each, after one workload pass of 20 s.
    p = plan_warmup(100, 16, 1.5, 20.0)
    assert (p["workers"], p["specs_per_worker"], p["estimated_s"], p["fits"], p["fit_specs"]) == (16, 7, 30.5, True, 100)
    # A budget it overruns: 3 compiles per worker fit in the 5 s left after the workload pass.
    p = plan_warmup(100, 16, 1.5, 20.0, budget_s=25.0)
    assert not p["fits"] and p["fit_specs"] == 48
    assert plan_warmup(100, 16, 1.5, 20.0, budget_s=31.0)["fits"]
    # More workers than specialisations: one per specialisation; none: one idle worker.
    assert plan_warmup(3, 16, 2.0, 1.0)["workers"] == 3 and plan_warmup(3, 16, 2.0, 1.0)["estimated_s"] == 3.0
    assert plan_warmup(0, 4, 2.0, 1.0)["workers"] == 1
    # A budget smaller than the workload pass itself fits nothing.
    assert plan_warmup(10, 2, 1.0, 30.0, budget_s=10.0)["fit_specs"] == 0
    with pytest.raises(ValueError, match="plan_warmup: expected"):
        plan_warmup(10, 0, 1.0, 1.0)


def test_warm_shares_partition_the_specialisations():
    """Workers split the keys by hash: each key in exactly one share, about evenly, and the same
    specialisation under two precision labels in the same share (compiled once, then a cache hit)."""
    keys = [(prec, kernel, f"spec{i}", "opts") for prec in ("fp32", "bf16") for kernel in ("a", "b")
            for i in range(100)]
    shares = [WarmShare(i, 4) for i in range(4)]
    owners = [[i for i, sh in enumerate(shares) if k in sh] for k in keys]
    assert all(len(o) == 1 for o in owners)
    sizes = [sum(1 for o in owners if o == [i]) for i in range(4)]
    assert sum(sizes) == len(keys) and min(sizes) > len(keys) / 4 * 0.6, sizes
    for k in keys[:200]:  # the fp32 keys: the bf16 twin of each is owned by the same worker
        twin = ("bf16",) + k[1:]
        assert [i for i, sh in enumerate(shares) if twin in sh] == [i for i, sh in enumerate(shares) if k in sh]
    assert all(k in WarmShare(0, 1) for k in keys)


def test_warmup_bad_arguments(tmp_path, capsys):
    assert main(["kernels", "warmup", "--arch", "70"]) == 2
    assert "--arch: expected one of [80, 86, 89, 90], got 70" in capsys.readouterr().err
    assert main(["kernels", "warmup", "--budget-s", "-1"]) == 2
    assert "--budget-s: expected a non-negative number of seconds, got -1.0" in capsys.readouterr().err
    existing = tmp_path / "w.json"
    existing.write_text("{}")
    assert main(["kernels", "warmup", "--json", str(existing)]) == 2
    assert "pass --overwrite" in capsys.readouterr().err and existing.read_text() == "{}"


def test_warmup_without_nvidia_backend_skips_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(aot, "nvidia_backend_missing", lambda: "triton 0.0 was installed without its NVIDIA back end")
    assert main(["kernels", "warmup", "--plan"]) == 0
    assert capsys.readouterr().out.strip().splitlines() == [
        "fastlift kernels warmup: skipped: triton 0.0 was installed without its NVIDIA back end"]


@pytest.mark.slow  # ~10-25 s: the quick workloads' counting pass in a subprocess
@needs_nvidia
def test_warmup_plan_counts_specialisations(tmp_path):
    """The counting pass compiles nothing and counts each distinct specialisation once: the quick
    stream workload is one step at N = 1 and one at N = 256 of the 243f model, 10 launches each of
    8 distinct specialisations (expand, 4 dilations, the 1x1 layers of blocks 1-3 share one, the
    last block's 1x1 writes plain rows, shrink), none shared between the buckets."""
    report, out = _warmup(tmp_path, tmp_path / "cache", "--plan", "--quick", "--precision", "bf16", "--kernel",
                          "stream_layer", "--jobs", "3")
    assert report["counts"] == {"bf16/stream_layer": 16}
    plan = report["plan"]
    assert plan["specs"] == 16 and plan["workers"] == 3 and plan["specs_per_worker"] == 6
    assert plan["estimated_s"] >= plan["record_s"] + 6 * plan["per_spec_s"] - 0.2
    assert "compiled" not in report and "warmup: 16 specialisations" in out
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.cubin"))


@pytest.mark.slow  # ~30-60 s on 2 cores: two workload passes and a couple of real compiles
@needs_nvidia
def test_warmup_fills_triton_cache_and_is_a_cache_hit_next_time(tmp_path):
    """The warm-up writes each specialisation's cubin into TRITON_CACHE_DIR under the key the JIT
    computes, so a second process finds every one of them there (no new cache entries)."""
    cache = tmp_path / "cache"
    first, _ = _warmup(tmp_path, cache, "--quick", "--precision", "bf16", "--kernel", "bn_finalize", "--jobs", "1")
    n = first["plan"]["specs"]
    assert n >= 1 and first["compiled"] == n and first["failed"] == [] and first["skipped"] == 0
    cubins = sorted(p.parent.name for p in cache.rglob("*.cubin"))
    assert len(cubins) == n
    second, _ = _warmup(tmp_path, cache, "--quick", "--precision", "bf16", "--kernel", "bn_finalize", "--jobs", "1")
    assert second["compiled"] == n
    assert sorted(p.parent.name for p in cache.rglob("*.cubin")) == cubins


def test_gpu_check_script_syntax():
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("needs bash")
    r = subprocess.run([bash, "-n", str(ROOT / "bench" / "gpu_check.sh")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text = (ROOT / "bench" / "gpu_check.sh").read_text()
    # the precompile phase runs before the GPU tests, with its own budget
    assert text.index('run_step "precompile"') < text.index('run_step "pytest-gpu"')
    assert "GPU_CHECK_PRECOMPILE_S" in text and "kernels warmup" in text
