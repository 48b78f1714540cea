"""Property test: malformed inputs to every reader and command entry give one clear error.

Hypothesis builds broken ``.npz`` data files (missing entries, wrong shapes and dtypes, NaN/Inf,
empty sequences, joint counts that contradict the metadata or the model, broken metadata,
pickles of objects outside the allow-list, non-archives, truncated archives) and damaged
checkpoints. Every reader must raise a one-line ``ValueError``/``FileNotFoundError`` (never
return), and every command must exit with status 2 and a one-line message on stderr (never a
traceback, never a result file), leaving every input byte-for-byte unchanged. Derandomised
(conftest's ``ci`` profile) and bounded to a few dozen examples.
"""
from __future__ import annotations

import hashlib
import io
from collections import OrderedDict
from decimal import Decimal
from fractions import Fraction
from pathlib import PurePosixPath

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fastlift._files import object_entry  # noqa: E402
from fastlift.cli import main  # noqa: E402
from fastlift.data.io import COCO_METADATA, read_keypoints, read_positions_3d  # noqa: E402
from fastlift.reference import TemporalModel  # noqa: E402

DISALLOWED = [Fraction(1, 3), Decimal("1.5"), OrderedDict(a=1), PurePosixPath("/etc/passwd"), {1, 2}, range(3)]


def _good_positions(t=20, j=17):
    return {"v": {"custom": [np.linspace(10, 500, t * j * 2, dtype=np.float32).reshape(t, j, 2)]}}


def _good_metadata():
    return dict(COCO_METADATA, video_metadata={"v": {"w": 640, "h": 480}})


def _save(entries: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **entries)
    return buf.getvalue()


@st.composite
def broken_2d_file(draw) -> tuple[str, bytes]:
    """(what is wrong, file bytes) of a 2D keypoints file that no reader may accept."""
    kind = draw(st.sampled_from(["missing_entry", "shape", "dtype", "nonfinite", "empty", "joints", "metadata",
                                 "pickle", "not_zip", "truncated", "not_dict", "no_arrays"]))
    t = draw(st.integers(1, 40))
    pos, md = _good_positions(t), _good_metadata()
    arr = pos["v"]["custom"][0]
    if kind == "missing_entry":
        drop = draw(st.sampled_from(["positions_2d", "metadata"]))
        entries = {"positions_2d": object_entry(pos), "metadata": object_entry(md)}
        del entries[drop]
        return kind, _save(entries)
    if kind == "shape":
        shape = draw(st.sampled_from([(t, 17), (t, 17, 3), (t, 17, 2, 1), (17 * t * 2,)]))
        pos["v"]["custom"][0] = np.zeros(shape, np.float32)
    elif kind == "dtype":
        pos["v"]["custom"][0] = draw(st.sampled_from([arr.astype(str), arr.astype(object), arr.astype(np.complex64),
                                                      "not an array", {"a": 1}]))
    elif kind == "nonfinite":
        bad = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        a = arr.copy()
        a[draw(st.integers(0, t - 1)), draw(st.integers(0, 16)), draw(st.integers(0, 1))] = bad
        pos["v"]["custom"][0] = a
    elif kind == "empty":
        pos["v"]["custom"][0] = np.zeros((0, 17, 2), np.float32)
    elif kind == "joints":
        j = draw(st.integers(1, 30).filter(lambda n: n != 17))
        pos["v"]["custom"][0] = np.ones((t, j, 2), np.float32)
    elif kind == "metadata":
        field = draw(st.sampled_from(["num_joints", "keypoints_symmetry", "layout_name", "video_metadata"]))
        md[field] = {"num_joints": -1, "keypoints_symmetry": [[1, 2], [3]], "video_metadata": {"v": {"w": 0, "h": 5}}
                     }.get(field, None)
        if field == "layout_name":
            del md["layout_name"]
    elif kind == "pickle":
        obj = draw(st.sampled_from(DISALLOWED))
        where = draw(st.sampled_from(["positions", "metadata"]))
        if where == "positions":
            pos["v"]["extra"] = [obj]
        else:
            md["extra"] = obj
    elif kind == "not_zip":
        return kind, draw(st.binary(min_size=0, max_size=64).filter(lambda b: not b.startswith(b"PK")))
    elif kind == "truncated":
        data = _save({"positions_2d": object_entry(pos), "metadata": object_entry(md)})
        return kind, data[: draw(st.integers(1, len(data) - 1))]
    elif kind == "not_dict":
        return kind, _save({"positions_2d": np.zeros((t, 17, 2), np.float32), "metadata": object_entry(md)})
    elif kind == "no_arrays":
        pos = {"v": {"custom": [None]}}
    return kind, _save({"positions_2d": object_entry(pos), "metadata": object_entry(md)})


@st.composite
def broken_3d_file(draw) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(["missing_entry", "shape", "nonfinite", "empty", "pickle", "joints_mixed",
                                 "no_subjects"]))
    t = draw(st.integers(1, 30))
    pos = {"S1": {"A": np.zeros((t, 17, 3), np.float32)}}
    if kind == "missing_entry":
        return kind, _save({"positions_2d": object_entry(pos)})
    if kind == "shape":
        pos["S1"]["A"] = np.zeros((t, 17, 2), np.float32)
    elif kind == "nonfinite":
        pos["S1"]["A"][draw(st.integers(0, t - 1)), 3, 1] = np.nan
    elif kind == "empty":
        pos["S1"]["A"] = np.zeros((0, 17, 3), np.float32)
    elif kind == "pickle":
        pos["S1"]["B"] = draw(st.sampled_from(DISALLOWED))
    elif kind == "joints_mixed":
        pos["S1"]["B"] = np.zeros((t, 15, 3), np.float32)
    elif kind == "no_subjects":
        pos = {}
    return kind, _save({"positions_3d": object_entry(pos)})


@st.composite
def damaged_checkpoint(draw, good: bytes) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(["empty", "truncated", "flipped", "text", "not_dict", "wrong_model"]))
    if kind == "empty":
        return kind, b""
    if kind == "truncated":
        return kind, good[: draw(st.integers(1, len(good) - 1))]
    if kind == "flipped":
        i = draw(st.integers(len(good) // 4, 3 * len(good) // 4))
        return kind, good[:i] + bytes([good[i] ^ 0xFF]) + good[i + 1:]
    if kind == "text":
        return kind, draw(st.text(min_size=1, max_size=40)).encode() or b"x"
    buf = io.BytesIO()
    if kind == "not_dict":
        torch.save([1, 2, 3], buf)
    else:  # a checkpoint of a model for 15 joints
        torch.save({"model_pos": TemporalModel(15, 2, 15, [3], channels=8).state_dict()}, buf)
    return kind, buf.getvalue()


def _one_line(err: str, command: str) -> None:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"fastlift {command}: error: "), err
    assert "Traceback" not in err


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("malformed")
    torch.manual_seed(0)
    ck = d / "good.bin"
    torch.save({"model_pos": TemporalModel(17, 2, 17, [3, 3], channels=8).state_dict()}, ck)
    good = d / "good.npz"
    good.write_bytes(_save({"positions_2d": object_entry(_good_positions()), "metadata": object_entry(_good_metadata())}))
    return d, ck, good


SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                          HealthCheck.too_slow])


@SETTINGS
@given(case=broken_2d_file())
def test_2d_readers_and_commands_reject_malformed_files(workdir, capsys, case):
    d, ck, _ = workdir
    kind, content = case
    path = d / "bad.npz"
    path.write_bytes(content)
    stamp = _digest(path)
    if kind != "no_arrays":  # a file whose cameras are all None is valid data (HumanEva), just nothing to lift
        with pytest.raises((ValueError, FileNotFoundError)) as e:
            read_keypoints(path)
        assert "\n" not in str(e.value).strip(), (kind, str(e.value))
    for command in ("infer", "stream"):
        out = d / f"{command}_out.npz"
        rc = main([command, "--input", str(path), "--model", str(ck), "-o", str(out), "--device", "cpu"])
        _, err = capsys.readouterr()
        assert rc == 2, (kind, err)
        _one_line(err, command)
        assert not out.exists(), kind
    assert _digest(path) == stamp and _digest(ck) == _digest(ck)


@SETTINGS
@given(case=broken_3d_file())
def test_3d_reader_rejects_malformed_files(workdir, case):
    d, _, _ = workdir
    kind, content = case
    path = d / "bad3d.npz"
    path.write_bytes(content)
    stamp = _digest(path)
    with pytest.raises((ValueError, FileNotFoundError)) as e:
        read_positions_3d(path)
    assert "\n" not in str(e.value).strip(), (kind, str(e.value))
    assert _digest(path) == stamp


@settings(max_examples=24, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(data=st.data())
def test_commands_reject_damaged_checkpoints(workdir, capsys, data):
    d, ck, good_npz = workdir
    kind, content = data.draw(damaged_checkpoint(ck.read_bytes()))
    bad = d / "bad.bin"
    bad.write_bytes(content)
    stamps = {p: _digest(p) for p in (bad, good_npz)}
    for command, argv in (("infer", ["--input", good_npz, "-o", d / "o.npz", "--device", "cpu"]),
                          ("stream", ["--input", good_npz, "-o", d / "o.npz", "--device", "cpu"]),
                          ("export", ["-o", d / "o.pt2", "--no-verify"])):
        if command == "export" and kind == "wrong_model":
            continue  # a valid checkpoint of another model: export has nothing to compare it with
        rc = main([command, "--model", str(bad), *map(str, argv)])
        _, err = capsys.readouterr()
        assert rc == 2, (kind, command, err)
        _one_line(err, command)
        if kind in ("empty", "truncated", "flipped", "text"):
            assert "--trust-checkpoint" not in err, (kind, err)
        assert not (d / "o.npz").exists() and not (d / "o.pt2").exists()
    assert {p: _digest(p) for p in stamps} == stamps
