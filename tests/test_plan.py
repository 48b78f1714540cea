"""The lifter plan (kernels/plan.py) against the reference oracle, and the kernel layer's imports.

The plan is the one geometry source of every fastlift executor; fastlift.reference works its
geometry out independently. These tests check that the two agree for every architecture the
test suite uses: receptive field, pad, causal shift, edge padding, per-layer taps/dilation/stride
(read off the reference's nn.Conv1d modules), residual offsets (the reference's slicing), layer
output lengths (forward hooks) and which input frames an output frame depends on (gradients).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from fastlift import reference as R
from fastlift.kernels.plan import ConvGeom, LifterPlan, filter_widths_from_kernels, validate_filter_widths

REPO = Path(__file__).resolve().parents[1]

# (filter widths, causal, dense, strided 1f) of every architecture the tests build.
FW = [[1], [3], [5], [7], [1, 3], [3, 1], [3, 3], [3, 5], [5, 3], [3, 3, 3], [5, 1, 3], [3, 5, 3], [3, 3, 3, 3],
      [3, 3, 3, 3, 3]]
ARCHS = [(fw, causal, dense, False) for fw in FW for causal in (False, True) for dense in (False, True)]
ARCHS += [(fw, causal, False, True) for fw in FW for causal in (False, True)]


def build_reference(fw, causal, dense, strided, channels=4, j_in=3, j_out=2):
    torch.manual_seed(0)
    if strided:
        return R.TemporalModelOptimized1f(j_in, 2, j_out, fw, causal=causal, dropout=0.0, channels=channels).eval()
    return R.TemporalModel(j_in, 2, j_out, fw, causal=causal, dropout=0.0, channels=channels, dense=dense).eval()


def arch_id(a):
    fw, causal, dense, strided = a
    return "-".join(map(str, fw)) + ("-causal" if causal else "") + ("-dense" if dense else "") + ("-1f" if strided else "")


@pytest.mark.parametrize("arch", ARCHS, ids=[arch_id(a) for a in ARCHS])
def test_plan_matches_reference_geometry(arch):
    fw, causal, dense, strided = arch
    m = build_reference(*arch)
    plan = LifterPlan.from_model(m)
    assert plan == LifterPlan.build(3, 2, 2, fw, channels=4, causal=causal, dense=dense, strided=strided)
    assert plan.strided == strided and plan.dense == dense and plan.causal == causal
    assert plan.receptive_field == m.receptive_field()
    assert plan.pad == (m.receptive_field() - 1) // 2
    assert plan.causal_shift == m.total_causal_shift()
    assert plan.delay == (0 if causal else plan.pad)
    if not strided:
        assert plan.sequence_padding == R.sequence_padding(m)
    # Per layer: the executed conv is the reference's nn.Conv1d, channels included.
    for lp in plan.layers:
        conv = m.get_submodule(lp.param)
        assert (conv.kernel_size[0], conv.dilation[0], conv.stride[0]) == (lp.taps, lp.dilation, lp.stride), lp.name
        assert (conv.in_channels, conv.out_channels) == (lp.c_in, lp.c_out), lp.name
        assert (conv.bias is not None) == lp.bias
        assert (m.get_submodule(lp.bn_param) if lp.bn_param else None) is not None or not lp.bn
    # Block pads and residual slices: the reference's own per-block numbers.
    for i, blk in enumerate(plan.blocks):
        assert blk.pad == m.pad[i + 1]
        assert blk.causal_shift == m.causal_shift[i + 1]
        if strided:  # x[:, :, shift + w//2 :: w]
            assert (blk.res_offset, blk.res_row_stride) == (m.causal_shift[i + 1] + fw[i + 1] // 2, fw[i + 1])
        else:  # x[:, :, pad + shift : T - pad + shift]
            assert (blk.res_offset, blk.res_row_stride) == (m.pad[i + 1] + m.causal_shift[i + 1], 1)
    assert plan.layers[-1].frame_offset == plan.pad
    assert sum(1 for lp in plan.layers if lp.has_residual) == len(fw) - 1


@pytest.mark.parametrize("arch", ARCHS, ids=[arch_id(a) for a in ARCHS])
def test_plan_output_lengths_and_dependencies_match_reference(arch):
    fw, causal, dense, strided = arch
    m = build_reference(*arch).double()
    m.relu = torch.nn.Identity()  # linear network: every tap of every layer shows in the gradient
    plan = LifterPlan.from_model(m)
    rf = plan.receptive_field
    t_in = 2 * rf if strided else rf + 4
    lengths = []
    hooks = [m.get_submodule(lp.param).register_forward_hook(lambda mod, i, o: lengths.append(o.shape[2]))
             for lp in plan.layers]
    x = torch.randn(1, t_in, 3, 2, dtype=torch.float64, requires_grad=True)
    y = m(x)
    for h in hooks:
        h.remove()
    assert y.shape[1] == plan.out_frames(t_in)
    assert lengths == plan.layer_out_frames(t_in)
    # Output frame 0 depends on exactly input frames [0, RF).
    y[0, 0].sum().backward()
    touched = (x.grad[0].abs().sum((1, 2)) > 0).nonzero().flatten().tolist()
    assert touched and touched[0] == 0 and touched[-1] == rf - 1


@pytest.mark.parametrize("arch", [a for a in ARCHS if not a[3]], ids=[arch_id(a) for a in ARCHS if not a[3]])
def test_plan_from_state_dict_and_stream_geometry(arch):
    fw, causal, dense, _ = arch
    m = build_reference(*arch)
    plan = LifterPlan.from_model(m)
    assert LifterPlan.from_state_dict(m.state_dict(), causal=causal, dense=dense) == plan
    assert plan.kernel_widths == tuple(m.get_submodule(lp.param).kernel_size[0] for lp in plan.layers
                                       if lp.name == "expand" or lp.name.endswith("wide"))
    # Rings: the network input and every block input, each as long as its reader's span + 1.
    rings = plan.stream_rings
    assert [r.length for r in rings] == [plan.expand.span + 1] + [b.conv.span + 1 for b in plan.blocks]
    # The rings together hold exactly the receptive field's history: the spans add up to RF - 1.
    assert sum(r.length - 1 for r in rings) == plan.receptive_field - 1
    prog = plan.stream_program
    assert [op.layer for op in prog] == list(range(len(plan.layers)))
    for op in prog:
        lp = plan.layers[op.layer]
        if op.res is not None:
            ring, lag = op.res
            # The residual tap sits res_offset frames after the oldest tap the wide conv reads.
            wide = plan.layers[op.layer - 1]
            assert wide.span - lag == lp.res_offset
            assert prog[op.layer - 1].lags[op.res_tap] == lag


def test_1f_plan_runs_as_the_dilated_model():
    plan = LifterPlan.build(17, 2, 17, [3, 3, 3], channels=8, strided=True)
    whole = plan.whole_sequence()
    assert not whole.strided and whole.receptive_field == plan.receptive_field
    assert [lp.dilation for lp in whole.layers] == [1, 3, 1, 9, 1, 1]
    assert [lp.stride for lp in plan.layers] == [3, 3, 1, 3, 1, 1]
    assert plan.stream_rings == whole.stream_rings


def test_plan_is_built_once_per_module():
    from fastlift.model import TemporalModel

    m = TemporalModel(3, 2, 2, [3, 3], channels=4, dropout=0.0, impl="reference")
    first = m.plan
    assert m.plan is first  # cached, not rebuilt per call
    m.causal = True  # an architecture attribute changed: the plan follows
    assert m.plan is not first and m.plan.causal and m.plan.causal_shift == m.total_causal_shift()


def test_bad_architectures_raise_clear_errors():
    with pytest.raises(ValueError, match=r"filter_widths\[1\]: only odd"):
        LifterPlan.build(17, 2, 17, [3, 4])
    with pytest.raises(ValueError, match="filter_widths: expected at least one"):
        validate_filter_widths([])
    with pytest.raises(ValueError, match="channels: expected a positive integer, got 0"):
        LifterPlan.build(17, 2, 17, [3], channels=0)
    with pytest.raises(ValueError, match="dense: the strided"):
        LifterPlan.build(17, 2, 17, [3, 3], dense=True, strided=True)
    with pytest.raises(ValueError, match="layers_conv.0.weight has kernel width 5"):
        filter_widths_from_kernels([3, 5], dense=True)
    assert filter_widths_from_kernels([3, 7, 19], dense=True) == (3, 3, 3)
    assert ConvGeom(3, 9).out_frames(19) == 1 and ConvGeom(3, 1, 3).out_frames(9) == 3


# ---------------------------------------------------------------------------- layering
def _imports(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name
        elif isinstance(node, ast.ImportFrom):
            yield ("." * node.level) + (node.module or "")


def test_kernel_layer_imports_nothing_above_it():
    """kernels/ may import the standard library, torch, triton, numpy and fastlift.kernels -- never
    fastlift's model/fold/streaming/export/reference modules or train/bench (layers import downward)."""
    bad = []
    for path in sorted((REPO / "kernels").glob("*.py")):
        for name in _imports(path):
            top = name.split(".")[0]
            if name.startswith("."):
                continue
            if top in ("fastlift",) and not (name == "fastlift.kernels" or name.startswith("fastlift.kernels.")):
                bad.append(f"{path.name}: {name}")
            if top in ("kernels", "train", "bench"):
                bad.append(f"{path.name}: {name}")
    assert not bad, "kernels/ imports above the kernel layer: " + ", ".join(bad)


def test_plan_module_is_pure_python():
    names = {n.split(".")[0] for n in _imports(REPO / "kernels" / "plan.py")}
    assert names <= {"__future__", "dataclasses", "typing"}, names
