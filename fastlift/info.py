"""``fastlift info``: facts about an architecture without building it."""
from __future__ import annotations

import json


def parse_widths(text: str) -> list[int]:
    """Parse ``"3,3,3,3,3"`` (the ``-arc`` flag's format) into a list of ints."""
    try:
        return [int(t) for t in str(text).replace(" ", "").split(",") if t]
    except ValueError:
        raise ValueError(f"architecture: expected comma-separated odd integers such as 3,3,3,3,3, got {text!r}") from None


def add_arguments(p) -> None:
    p.add_argument("-arc", "--architecture", default="3,3,3,3,3", help="filter widths, comma-separated (default 3,3,3,3,3 = 243 frames)")
    p.add_argument("-ch", "--channels", type=int, default=1024, help="hidden channels (default 1024)")
    p.add_argument("--joints-in", type=int, default=17)
    p.add_argument("--in-features", type=int, default=2)
    p.add_argument("--joints-out", type=int, default=17)
    p.add_argument("--dense", action="store_true")
    p.add_argument("--causal", action="store_true")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args) -> int:
    from fastlift.reference import architecture_summary

    s = architecture_summary(args.joints_in, args.in_features, args.joints_out, parse_widths(args.architecture),
                             args.channels, args.dense, args.causal)
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    rows = [
        ("filter widths", ",".join(map(str, s["filter_widths"]))),
        ("receptive field", f"{s['receptive_field']} frames (pad {s['pad']})"),
        ("causal / dense", f"{s['causal']} / {s['dense']}"),
        ("channels", s["channels"]),
        ("parameters", f"{s['parameters']:,}"),
        ("FLOPs / frame (amortised)", f"{s['flops_per_frame']:,}"),
        ("FLOPs / frame (1f window recompute)", f"{s['window_recompute_flops_per_frame']:,}"),
        ("weights fp32", f"{s['weight_bytes_fp32'] / 2**20:.2f} MiB"),
        ("weights bf16", f"{s['weight_bytes_bf16'] / 2**20:.2f} MiB"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0
