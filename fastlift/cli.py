"""The ``fastlift`` command line.

Every subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args)``;
this file only maps names to modules and imports them lazily, so ``fastlift --help`` is fast
and a missing optional dependency only affects the subcommand that needs it.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util  # `import importlib` alone does not load the util submodule
import sys

from fastlift._optional import MissingDependency

# name -> (module, one-line help). Modules are imported only when their subcommand runs
# (or when --help of that subcommand is requested).
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("fastlift.demo", "main job on the embedded synthetic data: train -> evaluate -> stream -> report"),
    "data": ("fastlift.data.cli", "data utilities (synth: generate the synthetic mocap data set)"),
    "info": ("fastlift.info", "architecture facts: parameters, FLOPs/frame, receptive field, weight bytes"),
    "train": ("fastlift.train.cli_train", "train a lifter (VideoPose3D run.py flags)"),
    "evaluate": ("fastlift.train.cli_evaluate", "evaluate a checkpoint (MPJPE, P-MPJPE, N-MPJPE, MPJVE)"),
    "infer": ("fastlift.train.cli_infer", "lift 2D keypoints (e.g. data_2d_custom_*.npz) to 3D"),
    "render": ("fastlift.train.cli_render", "animate 2D input / 3D prediction / ground truth"),
    "stream": ("fastlift.stream_cli", "replay 2D sequences as concurrent real-time streams"),
    "bench": ("fastlift.bench.cli", "benchmark fastlift against the reference"),
    "export": ("fastlift.export", "export a lifter with torch.export / AOTInductor"),
    "kernels": ("fastlift.kernels_cli", "Triton kernel tools (check: compile every specialisation for a GPU, no GPU "
                "needed; warmup: precompile them into Triton's cache; tune: time tile configurations on a GPU)"),
    "video": ("fastlift.train.video", "video file -> 2D keypoints (MediaPipe) -> 3D poses -> side-by-side video"),
}


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def build_parser(argv_command: str | None = None) -> argparse.ArgumentParser:
    from fastlift.cli_common import OneLineArgumentParser

    parser = argparse.ArgumentParser(
        prog="fastlift",
        description="fastlift: fast VideoPose3D-class 2D-to-3D human pose lifting with fused Triton kernels.",
    )
    from fastlift import __version__

    parser.add_argument("--version", action="version", version=f"fastlift {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineArgumentParser)
    parser._fastlift_subparsers = {}
    for name, (module, help_text) in SUBCOMMANDS.items():
        if not _module_exists(module):
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
        parser._fastlift_subparsers[name] = p
        # Only the subcommand being run needs its full argument set (and its imports).
        if argv_command == name:
            importlib.import_module(module).add_arguments(p)
            p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    from fastlift.cli_common import unknown_argument_hint

    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command)
    args, extra = parser.parse_known_args(argv)
    args._argv = argv  # the raw flags, for subcommands that re-launch themselves (train --nproc-per-node)
    if getattr(args, "command", None) is None:
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        parser.print_help()
        return 2
    if extra:  # reported by the subcommand's parser, so the message names the subcommand
        parser._fastlift_subparsers[args.command].error(
            f"unrecognized arguments: {' '.join(extra)}{unknown_argument_hint(extra)}")
    module = importlib.import_module(args._module)
    from fastlift.data.io import trusted_data

    try:
        with trusted_data(bool(getattr(args, "trust_data", False))):
            rc = module.run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, MissingDependency) as exc:
        # User errors (bad flags, bad or missing files, unwritable outputs): one line.
        if getattr(args, "debug", False):
            raise
        print(f"fastlift {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug, not a user error: still one line, the traceback on request
        if getattr(args, "debug", False):
            raise
        print(f"fastlift {args.command}: internal error: {type(exc).__name__}: {_one_line(exc)} (rerun with --debug "
              f"for the traceback)", file=sys.stderr)
        return 1
    return int(rc or 0)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        text = f"{exc.strerror}: {str(exc.filename)!r}"
    return " ".join(text.split()) or type(exc).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
