"""bench/cpu_ceiling: the GEMM shapes of a lifter, the CPU generation record, and a tiny run."""
import json

import pytest
import torch

from fastlift.bench.cpu_ceiling import layer_shapes, main, measure
from fastlift.bench.machine import cpu_ids, host_info
from fastlift.fold import fold_lifter
from fastlift.reference import TemporalModel

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
stepping\t: 1
flags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16 amx_tile sha_ni

processor\t: 1
cpu family\t: 99
model\t\t: 98
flags\t\t: avx512_fp16
"""


def test_cpu_ids_reads_the_first_processor_block():
    ids = cpu_ids(CPUINFO)
    assert ids == {"family": 25, "model": 17, "stepping": 1,
                   "isa": ["amx_tile", "avx2", "avx512_bf16", "avx512f", "fma"]}


def test_cpu_ids_without_cpuinfo_fields_is_empty():
    assert cpu_ids("") == {}
    assert cpu_ids("processor : 0\nvendor_id : X\n") == {}


def test_host_info_records_the_cpu_generation_where_known():
    info = host_info("cpu")
    ids = cpu_ids()
    if ids.get("family") is None:
        pytest.skip("no /proc/cpuinfo family on this machine")
    assert info["cpu_id"]["family"] == ids["family"] and info["cpu_id"]["model"] == ids["model"]


@pytest.mark.parametrize("arch,frames,batch", [((3, 3, 3), 40, 1), ((3, 3, 3, 3), 100, 2), ((1, 1), 5, 3)])
def test_layer_shapes_are_the_valid_conv_gemms(arch, frames, batch):
    model = TemporalModel(17, 2, 17, filter_widths=list(arch), channels=16).eval()
    folded = fold_lifter(model)
    shapes = layer_shapes(folded, frames, batch)
    # One GEMM per conv: expand, two per block, shrink.
    assert len(shapes) == 2 * len(arch)
    # Rows = batch x output frames of each layer; the last equals the model's output length.
    with torch.no_grad():
        out = model(torch.randn(batch, frames, 17, 2))
    assert shapes[-1][0] == batch * out.shape[1]
    # Expand K = taps x 34, hidden N = channels, shrink N = 51.
    assert shapes[0][1:] == (arch[0] * 34, 16) and shapes[-1][1:] == (16, 51)
    # The multiply-adds of the GEMMs are exactly the reference's conv multiply-adds.
    macs = 0
    t = frames
    for conv in [model.expand_conv] + [c for c in model.layers_conv] + [model.shrink]:
        t -= (conv.kernel_size[0] - 1) * conv.dilation[0]
        macs += batch * t * conv.in_channels * conv.kernel_size[0] * conv.out_channels
    assert sum(m * k * n for m, k, n in shapes) == macs


def test_layer_shapes_rejects_a_short_sequence():
    folded = fold_lifter(TemporalModel(17, 2, 17, filter_widths=[3, 3, 3], channels=8))
    with pytest.raises(ValueError, match="shorter than the receptive field 27"):
        layer_shapes(folded, 26)


def test_measure_tiny_model_reports_consistent_ratios():
    r = measure(arch=(3, 3), channels=32, frames=40, rounds=1, reps=1)
    assert r["speedup_vs_reference"]["reference-fp32"] == 1.0
    for k in ("gemm-onednn-fp32", "gemm-onednn-bf16", "fastlift-fp32", "fastlift-bf16", "executor-fp32"):
        assert r["median_s"][k] > 0
        assert r["gflops"][k] == pytest.approx(r["gflop"] / r["median_s"][k])
    assert r["ceiling"]["fp32"] == pytest.approx(r["median_s"]["reference-fp32"] / r["median_s"]["gemm-onednn-fp32"])
    assert r["fraction_of_ceiling"]["bf16"] == pytest.approx(r["median_s"]["gemm-onednn-bf16"] / r["median_s"]["fastlift-bf16"])


def test_cli_writes_json_and_rejects_bad_arch(tmp_path, capsys):
    out = tmp_path / "c.json"
    assert main(["--arch", "3,3", "--channels", "16", "--frames", "30", "--rounds", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["arch"] == [3, 3] and data["frames"] == 30 and "ceiling" in data
    assert "ceiling over the reference" in capsys.readouterr().out
    # An existing result is never replaced without --overwrite (checked before measuring).
    with pytest.raises(SystemExit):
        main(["--arch", "3,3", "--channels", "16", "--frames", "30", "--rounds", "1", "--json", str(out)])
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert json.loads(out.read_text()) == data
    assert main(["--arch", "3,3", "--channels", "16", "--frames", "30", "--rounds", "1", "--json", str(out),
                 "--overwrite"]) == 0
    with pytest.raises(SystemExit):
        main(["--arch", "3,x"])
    assert "--arch: expected comma-separated integers" in capsys.readouterr().err
