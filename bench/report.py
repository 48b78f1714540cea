"""Result files: JSON (the record), CSV (one row per result), PNG (charts), and the text table.

``bench/results/<slug>.json`` (``<slug>-quick.json`` for ``--quick``) holds::

    {"schema": "fastlift-bench/1", "slug": ..., "machine": {...},
     "runs": [{"run_id", "started", "finished", "argv", "plan", "scenarios", "precisions",
               "compile", "budget_s", "machine", "notes"}],
     "results": [<record>, ...]}

A record has every key of :data:`fastlift.bench.harness.RESULT_KEYS`. Running one scenario
replaces that scenario's records in the file and keeps the others (each record names its run).
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from fastlift._files import atomic_output, atomic_write_text
from fastlift.bench.harness import RESULT_KEYS, STATUSES

__all__ = ["SCHEMA", "new_report", "merge_results", "load_report", "write_json", "write_csv", "write_png",
           "format_table", "validate_report", "primary_baseline", "result_paths"]

SCHEMA = "fastlift-bench/1"
#: The baseline each scenario's headline speed-up is quoted against.
PRIMARY_BASELINE = {"sequence": "reference-fp32", "stream": "reference-window-fp32", "train-step": "reference-fp32"}


def primary_baseline(record: dict) -> str | None:
    if record["scenario"] == "train-step":
        for key, base in (("epoch slice", "reference-fp32+host-loader"),
                          ("batch construction", "reference-numpy-batches"),
                          ("epoch breakdown", "reference-fp32+numpy-batches")):
            if key in record["case"]:
                return base
    return PRIMARY_BASELINE.get(record["scenario"])


def result_paths(out_dir, slug: str, quick: bool) -> dict:
    stem = slug + ("-quick" if quick else "")
    out = Path(out_dir)
    return {"json": out / f"{stem}.json", "csv": out / f"{stem}.csv", "png": out / f"{stem}.png"}


def new_report(slug: str, machine: dict) -> dict:
    return {"schema": SCHEMA, "slug": slug, "machine": machine, "runs": [], "results": []}


def load_report(path) -> dict | None:
    """The report stored at ``path``, or None if there is none (or it is not a fastlift report)."""
    p = Path(path)
    if not p.exists():
        return None
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("schema") == SCHEMA else None


def merge_results(old: dict | None, new: dict, scenarios_run) -> dict:
    """``new`` plus the records of ``old`` for scenarios this run did not touch."""
    if not old or old.get("slug") != new.get("slug"):
        return new
    keep = [r for r in old.get("results", []) if r.get("scenario") not in set(scenarios_run)]
    kept_runs = {r.get("run_id") for r in keep}
    runs = [r for r in old.get("runs", []) if r.get("run_id") in kept_runs]
    merged = dict(new)
    merged["runs"] = runs + [r for r in new["runs"] if r.get("run_id") not in kept_runs]
    merged["results"] = keep + new["results"]
    return merged


def _atomic_write(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def _jsonable(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        try:
            return _jsonable(x.item())
        except (TypeError, ValueError):
            return str(x)
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)


def write_json(report: dict, path) -> Path:
    path = Path(path)
    _atomic_write(path, json.dumps(_jsonable(report), indent=1) + "\n")
    return path


CSV_COLUMNS = ["slug", "device_name", "run_id", "scenario", "case", "variant", "family", "precision", "baseline",
               "status", "frames_per_s", "us_per_step", "time_median_s", "time_p25_s", "time_p75_s", "time_iqr_s",
               "time_min_s", "time_max_s", "rounds", "inner", "tflops", "peak_tflops", "pct_peak", "latency_p50_us",
               "latency_p90_us", "latency_p99_us", "latency_max_us", "compile_s", "first_call_s", "check_metric",
               "check_error", "check_tolerance", "speedup_vs_primary", "speedup_vs_best_baseline", "reason", "params"]


#: Baselines that give context but are not alternatives for the same job (the offline
#: whole-sequence limit next to live streaming): never the "fastest baseline".
CONTEXT_BASELINES = {"reference-whole-fp32"}


def best_baseline_speedup(record: dict) -> tuple[str, float] | None:
    """The speed-up against the fastest baseline of the case (the least flattering ratio),
    context-only baselines excluded."""
    sp = {k: v for k, v in (record.get("speedup_vs") or {}).items() if k not in CONTEXT_BASELINES}
    if not sp:
        return None
    name = min(sp, key=lambda k: sp[k])
    return name, sp[name]


def write_csv(report: dict, path) -> Path:
    path = Path(path)
    baselines = sorted({b for r in report["results"] for b in (r.get("speedup_vs") or {})})
    cols = CSV_COLUMNS + [f"speedup_vs_{b}" for b in baselines]
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in report["results"]:
            t = r.get("time_s") or {}
            lat = r.get("latency_us") or {}
            sp = r.get("speedup_vs") or {}
            best = best_baseline_speedup(r)
            row = {
                "slug": report.get("slug"), "device_name": report.get("machine", {}).get("device_name"),
                "run_id": r.get("run_id"), "scenario": r["scenario"], "case": r["case"], "variant": r["variant"],
                "family": r["family"], "precision": r["precision"], "baseline": r["baseline"], "status": r["status"],
                "frames_per_s": r.get("frames_per_s"), "us_per_step": r.get("us_per_step"),
                "time_median_s": t.get("median"), "time_p25_s": t.get("p25"), "time_p75_s": t.get("p75"),
                "time_iqr_s": t.get("iqr"), "time_min_s": t.get("min"), "time_max_s": t.get("max"),
                "rounds": t.get("rounds"), "inner": t.get("inner"), "tflops": r.get("tflops"),
                "peak_tflops": r.get("peak_tflops"), "pct_peak": r.get("pct_peak"),
                "latency_p50_us": lat.get("p50"), "latency_p90_us": lat.get("p90"), "latency_p99_us": lat.get("p99"),
                "latency_max_us": lat.get("max"), "compile_s": r.get("compile_s"), "first_call_s": r.get("first_call_s"),
                "check_metric": r.get("check_metric"), "check_error": r.get("check_error"),
                "check_tolerance": r.get("check_tolerance"), "speedup_vs_primary": sp.get(primary_baseline(r) or ""),
                "speedup_vs_best_baseline": best[1] if best else None, "reason": r.get("reason"),
                "params": json.dumps(_jsonable(r.get("params") or {}), sort_keys=True),
            }
            row.update({f"speedup_vs_{b}": sp.get(b) for b in baselines})
            w.writerow(row)
    return path


def write_png(report: dict, path) -> tuple[Path | None, str | None]:
    """Charts: throughput vs stream count, and speed-ups per case (vs the scenario's primary
    baseline and vs the fastest baseline). Returns (path, None) or (None, reason)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return None, f"matplotlib not installed ({exc}); rerun `fastlift bench --replot {path}` where it is"
    ok = [r for r in report["results"] if r["status"] == "ok"]
    fig, axes = plt.subplots(1, 3, figsize=(19, 6.2))
    m = report.get("machine", {})
    fig.suptitle(f"fastlift benchmarks on {m.get('device_name', '?')} (torch {m.get('torch', '?')}, "
                 f"triton {m.get('triton', '?')}; {report.get('slug')})", fontsize=11)
    # (a) throughput vs streams
    ax = axes[0]
    stream = [r for r in ok if r["scenario"] == "stream"]
    for vid in sorted({r["variant"] for r in stream}):
        pts = sorted((r["params"]["streams"], r["frames_per_s"]) for r in stream if r["variant"] == vid)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                    linestyle="-" if vid.startswith("fastlift") else "--", label=vid)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("concurrent streams N")
    ax.set_ylabel("frames / s (one pose per stream per step)")
    ax.set_title("streaming: throughput vs streams")
    ax.grid(True, which="both", alpha=0.3)
    if stream:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no stream results", ha="center", transform=ax.transAxes)

    # (b) and (c) speed-ups
    def bars(ax, pick, title):
        groups = []
        for r in ok:
            if r["baseline"] or not r.get("speedup_vs"):
                continue
            val = pick(r)
            if val is not None:
                groups.append((f"{r['scenario']}: {r['case']}", r["variant"], val))
        cases = list(dict.fromkeys(g[0] for g in groups))
        variants = list(dict.fromkeys(g[1] for g in groups))
        colors = {v: plt.get_cmap("tab10")(i % 10) for i, v in enumerate(variants)}
        labelled = set()
        for i, c in enumerate(cases):
            here = [g for g in groups if g[0] == c]
            width = 0.8 / len(here)
            for j, (_, v, val) in enumerate(here):
                ax.bar(i - 0.4 + (j + 0.5) * width, val, width=width, color=colors[v],
                       label=None if v in labelled else v)
                labelled.add(v)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(cases)))
        ax.set_xticklabels(cases, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("speed-up (x, frames/s ratio)")
        ax.set_title(title)
        if groups:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no speed-ups (no fastlift results)", ha="center", transform=ax.transAxes)

    bars(axes[1], lambda r: (r["speedup_vs"] or {}).get(primary_baseline(r) or ""),
         "speed-up vs reference eager fp32\n(stream: vs window recompute)")
    bars(axes[2], lambda r: (best_baseline_speedup(r) or (None, None))[1],
         "speed-up vs the fastest baseline of each case\n(eager / TF32 / autocast / torch.compile;"
         " stream: live baselines only)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path, None


def _fmt_time(s) -> str:
    if s is None:
        return "-"
    if s >= 1:
        return f"{s:.3g} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} us"


def _fmt(x, spec: str = ".3g", none: str = "-") -> str:
    return none if x is None else format(x, spec)


def format_table(report: dict) -> str:
    """Readable table of a report: one block per scenario and case."""
    m = report.get("machine", {})
    lines = [f"device: {m.get('device_name')} [{report.get('slug')}]  torch {m.get('torch')}  triton {m.get('triton')}"
             f"  cores {m.get('cpu_cores')}  load {_fmt(m.get('load_average_1m'), '.2f')}"]
    peaks = m.get("peaks")
    if isinstance(peaks, dict):
        lines.append(f"peaks ({peaks.get('card')}): fp32 {peaks.get('fp32')} / tf32 {peaks.get('tf32')} / bf16 "
                     f"{peaks.get('bf16')} TFLOP/s dense, {peaks.get('mem_gbs')} GB/s")
    elif peaks == "unknown":
        lines.append("peaks: unknown device (not in fastlift.bench.peaks), % of peak not reported")
    else:
        lines.append("peaks: CPU, achieved GFLOP/s only")
    head = (f"  {'variant':<34} {'status':<8} {'median':>9} {'IQR':>9} {'frames/s':>11} {'GFLOP/s':>9} {'%peak':>6} "
            f"{'p99 lat':>9} {'vs primary':>10} {'vs best base':>12} {'err/tol':>9}")
    scen = list(dict.fromkeys(r["scenario"] for r in report["results"]))
    for s in scen:
        lines.append(f"\n== {s} ==")
        recs = [r for r in report["results"] if r["scenario"] == s]
        for case in dict.fromkeys(r["case"] for r in recs):
            lines.append(f"{case}")
            lines.append(head)
            for r in (x for x in recs if x["case"] == case):
                t = r.get("time_s") or {}
                lat = r.get("latency_us") or {}
                sp = r.get("speedup_vs") or {}
                prim = sp.get(primary_baseline(r) or "")
                best = best_baseline_speedup(r)
                err = r.get("check_error")
                tol = r.get("check_tolerance")
                et = "-" if err is None else (f"{err:.1e}" if not tol else f"{err / tol:.2f}")
                status = {"ok": "ok", "mismatch": "MISMATCH", "skipped": "skipped", "error": "ERROR"}[r["status"]]
                lines.append(
                    f"  {r['variant']:<34} {status:<8} {_fmt_time(t.get('median')):>9} {_fmt_time(t.get('iqr')):>9} "
                    f"{_fmt(r.get('frames_per_s'), '.4g'):>11} "
                    f"{_fmt(None if r.get('tflops') is None else r['tflops'] * 1e3, '.4g'):>9} "
                    f"{_fmt(r.get('pct_peak'), '.1f'):>6} {_fmt_time(None if lat.get('p99') is None else lat['p99'] / 1e6):>9} "
                    f"{'-' if prim is None else f'{prim:.2f}x':>10} "
                    f"{'-' if best is None else f'{best[1]:.2f}x':>12} {et:>9}")
                if r["status"] != "ok" or r.get("reason"):
                    lines.append(f"      {r['status']}: {r.get('reason')}")
                if r.get("compile_s"):
                    lines.append(f"      compile: first call {r['compile_s']:.1f} s"
                                 + (f" (+ dropout-free check compile {r['extra']['check_compile_s']:.1f} s)"
                                    if (r.get('extra') or {}).get('check_compile_s') else ""))
    return "\n".join(lines)


def validate_report(report: dict) -> None:
    """Raise ValueError listing every schema violation of ``report`` (see module docstring)."""
    problems = []
    if report.get("schema") != SCHEMA:
        problems.append(f"schema: expected {SCHEMA!r}, got {report.get('schema')!r}")
    for key in ("slug", "machine", "runs", "results"):
        if key not in report:
            problems.append(f"missing top-level key {key!r}")
    run_ids = {r.get("run_id") for r in report.get("runs", [])}
    for i, r in enumerate(report.get("results", [])):
        where = f"results[{i}] ({r.get('scenario')}/{r.get('case')}/{r.get('variant')})"
        missing = [k for k in RESULT_KEYS if k not in r]
        if missing:
            problems.append(f"{where}: missing keys {missing}")
            continue
        if r["status"] not in STATUSES:
            problems.append(f"{where}: bad status {r['status']!r}")
        if r["run_id"] not in run_ids:
            problems.append(f"{where}: run_id {r['run_id']!r} not in runs")
        if r["status"] == "ok":
            t = r["time_s"] or {}
            if not (isinstance(t.get("median"), (int, float)) and t["median"] > 0):
                problems.append(f"{where}: ok without a positive median time")
            if not (isinstance(r["frames_per_s"], (int, float)) and r["frames_per_s"] > 0):
                problems.append(f"{where}: ok without frames/s")
            err, tol = r["check_error"], r["check_tolerance"]
            if tol is not None and (err is None or not (err <= tol)):
                problems.append(f"{where}: ok although check error {err} exceeds tolerance {tol}")
        else:
            for k in ("frames_per_s", "us_per_step", "tflops", "pct_peak"):
                if r[k] is not None:
                    problems.append(f"{where}: status {r['status']} but {k} is reported")
            if r["speedup_vs"]:
                problems.append(f"{where}: status {r['status']} but speed-ups are reported")
            if not r["reason"]:
                problems.append(f"{where}: status {r['status']} without a reason")
        if r["baseline"] and r["speedup_vs"]:
            problems.append(f"{where}: a baseline carries speed-ups")
    if problems:
        raise ValueError("invalid benchmark report:\n  " + "\n  ".join(problems))
