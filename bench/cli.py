"""``fastlift bench``: the benchmark suite from the command line.

    fastlift bench --quick                        # CPU/CI: all scenarios in about a minute
    fastlift bench --scenario stream --device cuda --dtype bf16,fp32
    fastlift bench --scenario all --budget-s 300  # the GPU run of bench/gpu_check.sh
    fastlift bench --replot bench/results/nvidia-h100-80gb-hbm3.json   # CSV/PNG/table again

Writes ``<out>/<device-slug>.json`` / ``.csv`` / ``.png`` (``-quick`` suffix for ``--quick``;
``--out`` defaults to the current folder) and prints a table. An existing results JSON there is
updated: the scenarios run replace their earlier results, the others are kept (``--no-merge``
replaces the file). Exit status 0, or 3 when any variant disagreed with the reference or failed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scenario", action="append", default=None, metavar="NAME",
                   help="sequence | stream | train-step | all (repeatable or comma-separated; default all)")
    p.add_argument("--quick", action="store_true", help="short sizes (CI, CPU): about a minute on 2 cores")
    p.add_argument("--plan", choices=["tiny", "quick", "full"], default=None,
                   help="sizes: tiny (tests), quick (= --quick), full (default)")
    p.add_argument("--device", default="auto", help="auto (the accelerator if any, else cpu), cpu, cuda, cuda:1 ...")
    p.add_argument("--precision", "--dtype", dest="dtype", default=None, metavar="LIST",
                   help="fastlift precisions, comma-separated: fp32,tf32,fp16,bf16 (default: all on CUDA, fp32 on CPU; "
                        "--dtype is the old name)")
    from fastlift.cli_common import add_out_argument

    add_out_argument(p, metavar="DIR", help_text="results folder (default: the current folder; never the installed "
                                                 "package)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--no-compile", dest="compile", action="store_false", default=None,
                   help="skip the torch.compile(reference) baselines")
    g.add_argument("--compile", dest="compile", action="store_true",
                   help="include torch.compile baselines even where the plan leaves them out (--quick on CPU)")
    p.add_argument("--compile-mode", default="default",
                   choices=["default", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune"],
                   help="torch.compile mode of the compile baselines (default: inductor's default mode, which "
                        "compiles fastest; the GPU run has a 10-minute window)")
    p.add_argument("--compile-static", action="store_true",
                   help="specialise torch.compile per input shape (default: one dynamic-shape compilation per model)")
    p.add_argument("--export", action="store_true",
                   help="sequence scenario: also export each model with `fastlift export` (AOTInductor; minutes "
                        "per model on a small CPU) and time the compiled package -- the code fastlift_run runs "
                        "without Python -- interleaved with fuse(model).lift")
    p.add_argument("--budget-s", type=float, default=None,
                   help="total time budget in seconds; cases that do not fit are recorded as skipped")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", default="auto",
                   help="torch threads: N, or auto (default: torch's default, or 1 when the CPU is already busy "
                        "with other work, because OpenMP threads then oversubscribe the cores)")
    p.add_argument("--no-merge", action="store_true",
                   help="overwrite the results file instead of replacing only the scenarios run")
    p.add_argument("--no-png", action="store_true", help="do not draw the PNG chart")
    p.add_argument("--replot", metavar="JSON", default=None,
                   help="rewrite the CSV and PNG next to an existing results JSON, print its table, and exit")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def _scenarios(values) -> list[str]:
    from fastlift.bench.suite import SCENARIOS

    if not values:
        return list(SCENARIOS)
    out = []
    for v in values:
        for tok in v.split(","):
            tok = tok.strip()
            if not tok:
                continue
            if tok == "all":
                out += list(SCENARIOS)
            elif tok in SCENARIOS:
                out.append(tok)
            else:
                raise ValueError(f"--scenario: expected one of {', '.join(SCENARIOS)} or all, got {tok!r}")
    return list(dict.fromkeys(out))


def replot(path) -> int:
    from fastlift.bench import report as rep

    path = Path(path)
    data = rep.load_report(path)
    if data is None:
        raise FileNotFoundError(f"--replot: {path} is not a fastlift benchmark report")
    rep.validate_report(data)
    rep.write_csv(data, path.with_suffix(".csv"))
    png, why = rep.write_png(data, path.with_suffix(".png"))
    print(rep.format_table(data))
    print(f"\nwrote {path.with_suffix('.csv')}" + (f", {png}" if png else f" (no PNG: {why})"))
    return 0


def run(args) -> int:
    from fastlift.bench import report as rep
    from fastlift.bench.suite import run_suite

    if args.replot:
        return replot(args.replot)
    threads = args.threads
    if threads != "auto":
        try:
            threads = int(threads)
        except ValueError:
            raise ValueError(f"--threads: expected a positive integer or auto, got {args.threads!r}") from None
        if threads < 1:
            raise ValueError(f"--threads: expected a positive integer or auto, got {args.threads!r}")
    plan = args.plan or ("quick" if args.quick else "full")
    if args.quick and args.plan and args.plan != "quick":
        raise ValueError(f"--quick conflicts with --plan {args.plan}")
    log = (lambda line: None) if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    from fastlift.cli_common import check_output_dir

    out_dir = check_output_dir(args.out if args.out is not None else Path.cwd(), "-o/--out")
    report = run_suite(scenarios=_scenarios(args.scenario), plan=plan, device=args.device, precisions=args.dtype,
                       compile=args.compile, out_dir=out_dir, budget_s=args.budget_s, seed=args.seed,
                       merge=not args.no_merge, write_png=not args.no_png, log=log, argv=sys.argv[1:],
                       compile_mode=args.compile_mode, compile_dynamic=not args.compile_static, threads=threads,
                       export=args.export)
    this = [r for r in report["results"] if r["run_id"] == report["this_run"]]
    view = dict(report, results=this)
    print(rep.format_table(view))
    if report["notes"]:
        print("\nnotes:\n  " + "\n  ".join(report["notes"]))
    print("\nwrote " + ", ".join(report["files"].values()))
    bad = [r for r in this if r["status"] in ("mismatch", "error")]
    if bad:
        print(f"\n{len(bad)} variant(s) disagreed with the reference or failed: "
              + ", ".join(f"{r['scenario']}/{r['case']}/{r['variant']} ({r['status']})" for r in bad), file=sys.stderr)
        return 3
    return 0
