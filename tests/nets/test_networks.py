"""The Generator built from genotypes: shapes, analytic cost vs thop, TPSR weight import."""

from pathlib import Path

import pytest
import thop
import torch

from darts_sr.io import load_checkpoint
from darts_sr.nets.genotype import TPSR, GeneratorGenotype, Node
from darts_sr.nets.networks import (
    Generator,
    WeightsMismatch,
    generator_macs,
    generator_params,
    import_tpsr_state_dict,
    load_generator_weights,
)

TPSR_WEIGHTS = Path(__file__).resolve().parents[3] / "shared" / "anchors" / "tpsr" / "weights"

SMALL = GeneratorGenotype(
    nodes=(Node("conv_3x3", 0), Node("sep_7x7", 1), Node("dil_3x3", 0), Node("skip", 2), Node("sep_3x3", 3)),
    outputs=(4, 5),
    channels=8,
    scale=2,
)


def _thop_macs(model: torch.nn.Module, h: int, w: int) -> int:
    macs, _ = thop.profile(model.eval(), inputs=(torch.rand(1, 3, h, w),), verbose=False)
    return int(macs)


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("genotype", [TPSR, SMALL], ids=["tpsr", "small"])
def test_shapes_params_and_macs_match_thop(genotype, scale):
    genotype = GeneratorGenotype(genotype.nodes, genotype.outputs, genotype.channels, scale)
    model = Generator(genotype)
    x = torch.rand(2, 3, 9, 11)
    assert model(x).shape == (2, 3, 9 * scale, 11 * scale)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == generator_params(genotype)
    assert _thop_macs(model, 9, 11) == generator_macs(genotype, 9, 11)


def test_tpsr_cost_matches_published_figures():
    assert generator_params(TPSR) == 61_097
    macs = generator_macs(TPSR)  # 320x180 input, 1280x720 output
    assert abs(macs / 3.57e9 - 1) < 0.01
    assert macs == _thop_macs(Generator(TPSR), 180, 320)


def test_backward_reaches_every_parameter():
    model = Generator(SMALL)
    model(torch.rand(1, 3, 8, 8)).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("file", ["TPSR_NOGANX4.pt", "TPSR_D2X4.pt", "TPSR_ESRGANX4.pt"])
def test_tpsr_import_maps_every_key(file):
    state = load_checkpoint(TPSR_WEIGHTS / file)
    mapped = import_tpsr_state_dict(state, TPSR)
    model = Generator(TPSR)
    assert set(mapped) == set(model.state_dict())
    # 45 published tensors = 41 trainable + 4 mean-shift tensors that our MeanShift builds in.
    assert len(state) == len(mapped) + 4
    load_generator_weights(model, state)
    assert torch.equal(model.stem.weight, state["first_layer.weight"])
    assert torch.equal(model.nodes[9][0].weight, state["skip_layer.Node_9_Operation_0_type_Conv2d_7x7.model.0.weight"])


def test_tpsr_import_rejects_what_does_not_fit():
    state = dict(load_checkpoint(TPSR_WEIGHTS / "TPSR_NOGANX4.pt"))
    with pytest.raises(WeightsMismatch, match="is a conv_7x7, but genotype node 2 is sep_7x7"):
        nodes = list(TPSR.nodes)
        nodes[1] = Node("sep_7x7", 1)
        import_tpsr_state_dict(state, GeneratorGenotype(tuple(nodes), TPSR.outputs))
    extra = state | {"tail.weight": torch.zeros(1)}
    with pytest.raises(WeightsMismatch, match="'tail.weight' has no counterpart"):
        import_tpsr_state_dict(extra, TPSR)
    shifted = state | {"sub_mean.bias": torch.zeros(3)}
    with pytest.raises(WeightsMismatch, match="sub_mean.bias"):
        import_tpsr_state_dict(shifted, TPSR)
    no_act = {k: v for k, v in state.items() if k != "merge_op_act.weight"} | {"merge_op_act.weight": torch.zeros(1)}
    del no_act["up_mod.1.extend.bias"]
    with pytest.raises(WeightsMismatch, match="missing"):
        load_generator_weights(Generator(TPSR), no_act)


def test_own_state_dict_with_wrong_shape_is_rejected():
    state = Generator(TPSR).state_dict()
    wide = Generator(GeneratorGenotype(TPSR.nodes, TPSR.outputs, channels=8)).state_dict()
    with pytest.raises(WeightsMismatch, match="has shape"):
        load_generator_weights(Generator(TPSR), wide)
    load_generator_weights(Generator(TPSR), state)
