"""`fastlift info` and the command-line entry point."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fastlift.cli import main
from fastlift.reference import TemporalModel, count_parameters

from helpers import run_cli


def test_info_prints_243f_numbers(capsys):
    rc, out, err = run_cli(capsys, "info")
    assert rc == 0, err
    assert "16,952,371" in out
    assert "33,867,776" in out
    assert "243 frames (pad 121)" in out
    assert "3,3,3,3,3" in out
    assert f"{4 * 16_952_371 / 2**20:.2f} MiB" in out


def test_info_json(capsys):
    rc, out, err = run_cli(capsys, "info", "--json")
    assert rc == 0, err
    s = json.loads(out)
    assert s["parameters"] == 16_952_371
    assert s["flops_per_frame"] == 33_867_776
    assert s["receptive_field"] == 243 and s["pad"] == 121
    assert s["filter_widths"] == [3, 3, 3, 3, 3] and s["causal"] is False and s["dense"] is False


@pytest.mark.parametrize("dense", [False, True])
def test_info_json_other_architectures_match_built_model(capsys, dense):
    argv = ["info", "-arc", "3,5,3", "-ch", "16", "--joints-in", "15", "--joints-out", "15", "--causal", "--json"]
    rc, out, err = run_cli(capsys, *(argv + (["--dense"] if dense else [])))
    assert rc == 0, err
    s = json.loads(out)
    m = TemporalModel(15, 2, 15, [3, 5, 3], causal=True, channels=16, dense=dense)
    assert s["parameters"] == count_parameters(m)
    assert s["receptive_field"] == 45 and s["pad"] == 22 and s["causal"] is True and s["dense"] is dense


@pytest.mark.parametrize("arc,fragment", [("3,4,3", "odd filter widths"), ("3,x,3", "comma-separated odd integers"),
                                          ("", "at least one"), ("3,-1", "odd filter widths")])
def test_info_bad_architecture(capsys, arc, fragment):
    rc, out, err = run_cli(capsys, "info", f"--architecture={arc}")
    assert rc == 2
    assert err.startswith("fastlift info: error:")
    assert fragment in err
    assert "Traceback" not in err and out == ""
    rc, out, err = run_cli(capsys, "info", "-arc", arc)
    assert rc == 2 and fragment in err


@pytest.mark.parametrize("flag,value", [("-ch", "0"), ("--joints-in", "0"), ("--joints-out", "-2")])
def test_info_bad_sizes(capsys, flag, value):
    rc, out, err = run_cli(capsys, "info", flag, value)
    assert rc == 2 and "expected a positive integer" in err and out == ""


def test_info_bad_architecture_debug_raises(capsys):
    with pytest.raises(ValueError, match="odd filter widths"):
        main(["info", "-arc", "3,2", "--debug"])


def test_no_command_prints_help(capsys):
    rc, out, _ = run_cli(capsys)
    assert rc == 2 and "info" in out and "usage: fastlift" in out


def _console_script() -> str:
    candidate = Path(sys.executable).parent / "fastlift"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("fastlift")
    if found is None:
        pytest.fail("the `fastlift` console script is not installed next to the interpreter or on PATH")
    return found


def test_console_script_info(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([_console_script(), "info"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "16,952,371" in r.stdout and "33,867,776" in r.stdout and "243 frames" in r.stdout
