"""``fastlift train``: VideoPose3D's ``run.py`` (train, resume, evaluate, render) with its flags.

See :mod:`fastlift.train.args` for the flags and :mod:`fastlift.train.loop` for the recipe.
"""
from __future__ import annotations

from fastlift.train.args import add_train_arguments


def add_arguments(parser) -> None:
    add_train_arguments(parser)


def run(args) -> int:
    from fastlift.train.runner import run_cli

    return run_cli(args, "train")
