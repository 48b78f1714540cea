"""Generate the README performance table from ``bench/results/*.json`` (never write it by hand).

    python -m fastlift.bench.readme_table                       # print the block
    python -m fastlift.bench.readme_table --write README.md     # rewrite the marked block in place
    python -m fastlift.bench.readme_table --check README.md     # exit 1 if the block is stale

The block sits between ``<!-- perf-table:start -->`` and ``<!-- perf-table:end -->``; everything
outside the markers is left untouched. Per device, the full run's results are used when present,
else the ``--quick`` run's (``-tiny`` test outputs are ignored). Every row names its card; the
context lines give the paper's number and the card's physical limits.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fastlift.bench import report as rep
from fastlift.bench.peaks import lookup_peaks

__all__ = ["START", "END", "collect", "render", "rewrite_block", "main", "PAPER_FPS"]

START = "<!-- perf-table:start -->"
END = "<!-- perf-table:end -->"
#: The paper's throughput for the 243-frame model (NVIDIA GP100, batch 1), as quoted in issue 7.
PAPER_FPS = 150_000
_243_FLOPS = 33_867_776


def _default_results() -> Path:
    return Path(__file__).resolve().parent / "results"


def collect(results_dir) -> list[dict]:
    """One report per device slug: the full run if there is one, else the quick run."""
    by_slug: dict[str, tuple[int, dict]] = {}
    for p in sorted(Path(results_dir).glob("*.json")):
        if p.stem.endswith("-tiny"):
            continue
        data = rep.load_report(p)
        if data is None:
            continue
        rank = 0 if p.stem.endswith("-quick") else 1
        slug = data.get("slug", p.stem)
        if slug not in by_slug or rank > by_slug[slug][0]:
            data["_file"] = p.name
            data["_quick"] = rank == 0
            by_slug[slug] = (rank, data)
    reports = [d for _, d in by_slug.values()]
    reports.sort(key=lambda d: (d.get("machine", {}).get("device_type") != "cuda", d.get("slug", "")))
    return reports


def _card(report: dict) -> str:
    m = report.get("machine", {})
    if m.get("device_type") == "cuda":
        return m.get("device_name", report.get("slug"))
    return f"{m.get('device_name', 'CPU')} CPU ({m.get('cpu_cores', '?')} cores)"


def _num(x: float) -> str:
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def _time(us: float) -> str:
    if us >= 1e6:
        return f"{us / 1e6:.3g} s"
    if us >= 1e3:
        return f"{us / 1e3:.3g} ms"
    return f"{us:.3g} µs"


def _flops(r: dict, cuda: bool) -> str:
    if r.get("tflops") is None:
        return "–"
    if not cuda:
        return f"{r['tflops'] * 1e3:.1f} GFLOP/s"
    pct = r.get("pct_peak")
    return f"{r['tflops']:.1f} TFLOP/s" + (f" ({pct:.0f} %)" if pct is not None else " (peak unknown)")


def _ratio(r: dict, baseline: str | None) -> str:
    sp = r.get("speedup_vs") or {}
    if baseline and baseline in sp:
        return f"{sp[baseline]:.2f}×"
    return "–"


def _best_base(r: dict) -> str:
    b = rep.best_baseline_speedup(r)
    return "–" if b is None else f"{b[1]:.2f}× ({b[0]})"


def _best(records: list[dict]) -> dict | None:
    ok = [r for r in records if r["status"] == "ok" and not r["baseline"] and r.get("frames_per_s")]
    return max(ok, key=lambda r: r["frames_per_s"]) if ok else None


def _rows(report: dict) -> list[list[str]]:
    res = report.get("results", [])
    cuda = report.get("machine", {}).get("device_type") == "cuda"
    card = _card(report) + (" · quick" if report.get("_quick") else "")
    rows = []

    def add(scenario: str, setting: str, recs: list[dict], unit: str = "frames/s", latency: bool = False):
        # GPUs: the best variant. CPUs: the best per precision (fp32 rows, then bf16 rows), since
        # which one a CPU user can take depends on whether the CPU has native bf16.
        groups = [recs] if cuda else [[r for r in recs if r.get("precision") == p] for p in ("fp32", "bf16")]
        for group in groups:
            r = _best(group)
            if r is None:
                continue
            t = (r.get("latency_us") or {}).get("p50") if latency else r.get("us_per_step")
            rows.append([card, scenario, setting, r["variant"], f"{_num(r['frames_per_s'])} {unit}",
                         "–" if t is None else _time(t) + (" p50" if latency else ""), _flops(r, cuda),
                         _ratio(r, rep.primary_baseline(r)), _best_base(r)])

    seq = [r for r in res if r["scenario"] == "sequence"]
    if seq:
        cases = {}
        for r in seq:
            cases.setdefault(r["case"], []).append(r)
        rf243 = {c: v for c, v in cases.items() if v[0]["params"].get("receptive_field") == 243}
        pool = rf243 or cases
        if pool:
            b1 = [c for c, v in pool.items() if v[0]["params"].get("batch") == 1]
            if b1:
                c = max(b1, key=lambda c: pool[c][0]["params"]["frames"])
                add("whole sequence", c, pool[c])
            big = max(pool, key=lambda c: pool[c][0]["params"]["batch"] * pool[c][0]["params"]["frames"])
            if not b1 or big != max(b1, key=lambda c: pool[c][0]["params"]["frames"]):
                add("whole sequence", big, pool[big])
    st = [r for r in res if r["scenario"] == "stream"]
    if st:
        ns = sorted({r["params"]["streams"] for r in st})
        for n in dict.fromkeys([ns[0], ns[-1]]):
            recs = [r for r in st if r["params"]["streams"] == n]
            add("streaming step", recs[0]["case"], recs, latency=True)
    tr = [r for r in res if r["scenario"] == "train-step"]
    for case in dict.fromkeys(r["case"] for r in tr):
        label = ("data + training" if "slice" in case else "training batches" if "batch construction" in case
                 else "training step phases" if "breakdown" in case else "training step")
        add(label, case, [r for r in tr if r["case"] == case], unit="samples/s")
    return rows


def _context(reports: list[dict]) -> list[str]:
    from fastlift.reference import architecture_summary

    arch = architecture_summary()
    lines = [f"- Paper (Pavllo et al., CVPR 2019): ~{PAPER_FPS:,} frames/s for the 243-frame model on an NVIDIA "
             f"GP100 at batch 1, i.e. {PAPER_FPS * _243_FLOPS / 1e12:.1f} TFLOP/s at {_243_FLOPS:,} FLOPs/frame "
             f"(~{100 * PAPER_FPS * _243_FLOPS / 10.3e12:.0f} % of the GP100's 10.3 TFLOP/s fp32 peak)."]
    for r in reports:
        m = r.get("machine", {})
        if m.get("device_type") != "cuda":
            continue
        peaks = m.get("peaks") if isinstance(m.get("peaks"), dict) else lookup_peaks(m.get("device_name"))
        if not peaks:
            lines.append(f"- {_card(r)}: not in the peak table (`fastlift/bench/peaks.py`); % of peak not reported.")
            continue
        parts = []
        for key, label in (("bf16", "bf16"), ("tf32", "TF32"), ("fp32", "fp32")):
            if peaks.get(key):
                parts.append(f"{peaks[key]:g} TFLOP/s {label} → ≤ {peaks[key] * 1e12 / _243_FLOPS / 1e6:.1f} M frames/s")
        bw = peaks.get("mem_gbs")
        if bw:
            parts.append(f"{bw:,.0f} GB/s → one step that reads all 243f weights ({arch['weight_bytes_bf16'] / 1e6:.1f} MB "
                         f"bf16) at most {bw * 1e9 / arch['weight_bytes_bf16']:,.0f} steps/s")
        lines.append(f"- {_card(r)} limits (dense datasheet peaks; 243f whole-sequence ceilings): " + "; ".join(parts) + ".")
    if any(r.get("machine", {}).get("device_type") != "cuda" for r in reports):
        lines.append("- CPU rows report achieved GFLOP/s only, one row per precision (fp32, bf16); on CPU fastlift "
                     "runs the BN-folded model (fp32: conv1d; bf16: the oneDNN executor `fastlift.cpu_infer`; no Triton) for "
                     "whole sequences, the "
                     "StreamingLifter torch backend for streaming and the 1f model as channels-last GEMMs (bf16: "
                     "torch.autocast) for training. Whether bf16 is native on that CPU is in the run's notes.")
    return lines


def render(results_dir=None) -> str:
    """The markdown block (without the markers)."""
    results_dir = Path(results_dir) if results_dir is not None else _default_results()
    reports = collect(results_dir)
    out = ["<!-- generated by `python -m fastlift.bench.readme_table` from bench/results/*.json; do not edit -->", ""]
    if not reports:
        out.append("_No benchmark results yet: run `fastlift bench` (see docs/performance.md)._")
        return "\n".join(out)
    out += ["| Card | Scenario | Setting | Best fastlift variant | Throughput | Time per call | Achieved (% of peak) "
            "| vs reference eager fp32 | vs fastest baseline |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in reports:
        for row in _rows(r):
            out.append("| " + " | ".join(row) + " |")
    out += ["", "Streaming rows compare with the reference's sliding-window recompute (eager fp32); the data + "
                "training row with the reference's host-side batching. \"Fastest baseline\" is the best of reference "
                "eager fp32/TF32, autocast bf16 and `torch.compile(reference)` measured in the same run.", ""]
    out += _context(reports)
    runs = []
    for r in reports:
        last = (r.get("runs") or [{}])[-1]
        m = r.get("machine", {})
        runs.append(f"{_card(r)}: `{r['_file']}`, torch {m.get('torch')}, triton {m.get('triton')}, "
                    f"{last.get('finished') or last.get('started')}")
    out += ["", "Sources: " + "; ".join(runs) + "."]
    return "\n".join(out)


def rewrite_block(text: str, block: str) -> str:
    """``text`` with the content between the perf-table markers replaced by ``block``."""
    if text.count(START) != 1 or text.count(END) != 1:
        raise ValueError(f"expected exactly one {START} and one {END} marker (found {text.count(START)} and "
                         f"{text.count(END)})")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    if head.count(END):
        raise ValueError(f"{END} comes before {START}")
    return f"{head}{START}\n{block.rstrip()}\n{END}{tail}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", default=None, help="results folder (default: bench/results)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--write", metavar="FILE", help="rewrite the marked block of FILE in place")
    g.add_argument("--check", metavar="FILE", help="exit 1 if FILE's marked block differs from the generated one")
    args = p.parse_args(argv)
    block = render(args.results)
    if args.write or args.check:
        path = Path(args.write or args.check)
        text = path.read_text()
        try:
            new = rewrite_block(text, block)
        except ValueError as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            return 2
        if args.check:
            if new != text:
                print(f"{path}: the performance table is stale; run python -m fastlift.bench.readme_table --write "
                      f"{path}", file=sys.stderr)
                return 1
            return 0
        if new != text:
            path.write_text(new)
        print(f"updated {path}" if new != text else f"{path} already up to date")
        return 0
    print(f"{START}\n{block}\n{END}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
