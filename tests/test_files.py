"""Atomic file output (fastlift._files): whole file or nothing, usual permissions, no litter."""
import os
import stat

import numpy as np
import pytest

from fastlift._files import atomic_output, atomic_savez, atomic_write_text, object_entry


def test_atomic_output_replaces_on_success_with_usual_mode(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_output(target, durable=True) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_text("new")
        assert not target.exists()  # nothing visible until the block succeeds
    assert target.read_text() == "new"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


def test_atomic_output_keeps_old_file_and_cleans_up_on_error(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_output(target) as tmp:
            tmp.write_text("half-written")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_output_suffix_and_helpers(tmp_path):
    with atomic_output(tmp_path / "anim.gif", suffix=".gif") as tmp:
        assert tmp.suffix == ".gif"
        tmp.write_bytes(b"GIF89a")
    p = atomic_savez(tmp_path / "d.npz", positions=object_entry({"S1": np.arange(3)}))
    assert p.name == "d.npz" and not (tmp_path / "d.npz.npz").exists()
    with np.load(p, allow_pickle=True) as z:
        np.testing.assert_array_equal(z["positions"].item()["S1"], np.arange(3))
    assert atomic_write_text(tmp_path / "t.json", "{}\n").read_text() == "{}\n"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["anim.gif", "d.npz", "t.json"]
