"""``fastlift train``: VideoPose3D's ``run.py`` (train, resume, evaluate, render) with its flags.

See :mod:`fastlift.train.args` for the flags and :mod:`fastlift.train.loop` for the recipe.
"""
from __future__ import annotations

import os

from fastlift.train.args import add_train_arguments
from fastlift.train.distributed import add_distributed_arguments


def add_arguments(parser) -> None:
    add_train_arguments(parser)
    add_distributed_arguments(parser)


def run(args) -> int:
    from fastlift.train import distributed

    if distributed.launch_requested(args):
        if distributed.in_torchrun():
            raise ValueError(f"--nproc-per-node: this process already runs under torchrun (WORLD_SIZE="
                             f"{os.environ.get('WORLD_SIZE')}); drop --nproc-per-node")
        from fastlift.train import args as targs

        targs.validate(args, "train")
        argv = list(getattr(args, "_argv", None) or [])
        cmd = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)  # as fastlift.cli finds it
        argv = argv[cmd + 1:] if cmd is not None else argv
        return distributed.launch(args, argv)
    from fastlift.train.runner import run_cli

    return run_cli(args, "train")
