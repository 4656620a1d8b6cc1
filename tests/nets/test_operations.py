"""The op table: formulas against hand arithmetic and thop, shapes, gradients."""

import pytest
import thop
import torch

from operations import GENERATOR_OPS, GENERATOR_SEARCH_SPACE, OPS, build_op

C, H, W = 4, 5, 6

# Worked by hand for C=4, H=5, W=6 (30 pixels). conv: C*C*k*k weights + C biases + 1 PReLU slope;
# MACs: C*C*k*k per pixel + one per PReLU element (C per pixel). sep: depthwise C*k*k, PReLU, 1x1
# C*C + C biases, PReLU; MACs (C*k*k + C*C) per pixel + 2*C per pixel for the two PReLUs.
HAND = {
    "conv_3x3": (4 * 4 * 9 + 4 + 1, 4 * 4 * 9 * 30 + 4 * 30),  # 149, 4440
    "conv_5x5": (4 * 4 * 25 + 4 + 1, 4 * 4 * 25 * 30 + 4 * 30),  # 405, 12120
    "conv_7x7": (4 * 4 * 49 + 4 + 1, 4 * 4 * 49 * 30 + 4 * 30),  # 789, 23640
    "sep_3x3": (4 * 9 + 1 + 16 + 4 + 1, (4 * 9 + 16) * 30 + 8 * 30),  # 58, 1800
    "sep_5x5": (4 * 25 + 1 + 16 + 4 + 1, (4 * 25 + 16) * 30 + 8 * 30),  # 122, 3720
    "sep_7x7": (4 * 49 + 1 + 16 + 4 + 1, (4 * 49 + 16) * 30 + 8 * 30),  # 218, 6600
    "dil_3x3": (149, 4440),
    "skip": (0, 0),
    "none": (0, 0),
}


def test_table_is_covered_by_hand_figures():
    assert set(HAND) == set(OPS)


def test_search_space_names_exist():
    assert set(GENERATOR_SEARCH_SPACE) <= set(OPS)
    assert "none" not in GENERATOR_OPS


@pytest.mark.parametrize("name", sorted(OPS))
def test_formulas_match_hand_arithmetic(name):
    params, macs = HAND[name]
    assert OPS[name].params(C) == params
    assert OPS[name].macs(C, H, W) == macs


@pytest.mark.parametrize("name", sorted(OPS))
def test_formulas_match_module_and_thop(name):
    op = build_op(name, C).eval()
    assert sum(p.numel() for p in op.parameters() if p.requires_grad) == OPS[name].params(C)
    thop_macs, _ = thop.profile(op, inputs=(torch.randn(1, C, H, W),), verbose=False)
    assert int(thop_macs) == OPS[name].macs(C, H, W)


@pytest.mark.parametrize("name", sorted(OPS))
def test_shape_kept_and_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    op = build_op(name, C)
    x = torch.randn(2, C, H, W, requires_grad=True)
    y = op(x)
    assert y.shape == x.shape
    y.square().sum().backward()
    for pname, p in op.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname


def test_dilated_conv_sees_two_pixels_away():
    op = build_op("dil_3x3", 1)
    taps = op[0].weight.shape[-1]
    assert taps == 3 and op[0].dilation == (2, 2)


def test_unknown_op_is_named():
    with pytest.raises(KeyError, match="conv_9x9"):
        build_op("conv_9x9", 4)
