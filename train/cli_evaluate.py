"""``fastlift evaluate``: evaluate a checkpoint (``--evaluate FILE``) with ``run.py``'s flags.

Prints the per-action MPJPE / P-MPJPE / N-MPJPE / MPJVE table (mm) with the action-wise averages
(``--by-subject`` adds a table per subject) and writes every number as JSON (``--output-json``,
default ``<checkpoint dir>/<model name>_evaluation.json``). Same as ``fastlift train --evaluate FILE``.
"""
from __future__ import annotations

from fastlift.train.args import add_train_arguments


def add_arguments(parser) -> None:
    add_train_arguments(parser, "evaluate")


def run(args) -> int:
    from fastlift.train.runner import run_cli

    return run_cli(args, "evaluate")
