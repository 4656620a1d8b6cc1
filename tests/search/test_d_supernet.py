"""The discriminator supernet: reference reachable, one-hot equals the derived network, expected MACs, gradients."""

import json
import random

import pytest
import torch
from torch import nn

from darts_sr.config import DiscriminatorSearchConfig
from darts_sr.nets.discriminator import (
    SRGAN_DISCRIMINATOR,
    Discriminator,
    DiscriminatorGenotype,
    discriminator_macs,
)
from darts_sr.nets.genotype import GenotypeError
from darts_sr.search.discriminator_supernet import DiscriminatorSupernet, reference_macs
from operations.discriminator import D_OPS, D_SEARCH_SPACE, HEADS, NORMS

pytestmark = pytest.mark.usefixtures("one_thread")

ALL_OPS = tuple(D_OPS)  # the whole table, wider than the default search space


def _supernet(blocks=4, widths=(2, 4), norms=NORMS, ops=D_SEARCH_SPACE, heads=HEADS, seed=0):
    torch.manual_seed(seed)
    return DiscriminatorSupernet(blocks, widths, norms, ops, heads)


def test_search_space_and_config_defaults_name_existing_ops():
    assert set(D_SEARCH_SPACE) <= set(D_OPS)
    stage2 = DiscriminatorSearchConfig()
    assert set(stage2.ops) <= set(D_OPS) and set(stage2.norms) <= set(NORMS) and set(stage2.heads) <= set(HEADS)
    # The defaults search what differs between discriminators: an 8x range of widths, every norm and head.
    assert max(stage2.base_widths) >= 8 * min(stage2.base_widths)
    assert set(stage2.norms) == set(NORMS) and set(stage2.heads) == set(HEADS)


def test_reference_discriminator_is_reachable_with_the_default_stage2_config():
    # SRGAN's discriminator (stage 1's fixed one): 8 blocks of conv_3x3, base width 64, batch norm.
    s = DiscriminatorSearchConfig()
    net = DiscriminatorSupernet(s.blocks, s.base_widths, s.norms, s.ops, s.heads)
    net.set_genotype(SRGAN_DISCRIMINATOR)
    assert net.derive() == SRGAN_DISCRIMINATOR
    # ... and with base width and norm searched, at the width stage 1's demo uses.
    demo_reference = DiscriminatorGenotype(("conv_3x3",) * 8, base_width=16, norm="batch")
    net = DiscriminatorSupernet(8, (8, 16), NORMS, D_SEARCH_SPACE, HEADS)
    net.set_genotype(demo_reference)
    assert net.derive() == demo_reference
    assert reference_macs(net, 32) == discriminator_macs(demo_reference, 32, 32)


def test_parameter_groups_are_disjoint_and_complete():
    net = _supernet()
    arch, weights = net.arch_parameters(), net.weight_parameters()
    assert {id(p) for p in arch}.isdisjoint(id(p) for p in weights)
    assert len(arch) + len(weights) == len(list(net.parameters()))
    names = set(net.state_dict())
    assert {"alpha", "alpha_width", "alpha_norm", "alpha_head"} <= names
    assert net.alpha.shape == (4, len(D_SEARCH_SPACE)) and net.alpha_width.shape == (2,)
    assert net.alpha_norm.shape == (3,) and net.alpha_head.shape == (2,)


def test_probabilities_sum_to_one():
    net = _supernet()
    with torch.no_grad():
        for p in net.arch_parameters():
            p.normal_()
    assert torch.allclose(net.op_probs().sum(dim=1), torch.ones(4))
    assert net.width_probs().sum().item() == pytest.approx(1.0)
    assert net.norm_probs().sum().item() == pytest.approx(1.0)
    assert net.head_probs().sum().item() == pytest.approx(1.0)


def test_backward_reaches_every_parameter():
    net = _supernet().train()
    with torch.no_grad():
        for p in net.arch_parameters():
            p.normal_(0, 0.5)
    x = torch.rand(3, 3, 12, 12)
    logits = net(x)
    # Both heads searched: the pool logit broadcasts over the patch logits, one per position of the 3 x 3 map.
    assert logits.shape == (3, 9) and torch.isfinite(logits).all()
    # A target that depends on the batch so BatchNorm's shift does not cancel every gradient.
    (logits - torch.arange(3.0).view(3, 1)).square().sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("seed", range(6))
def test_one_hot_supernet_is_the_derived_discriminator(seed):
    """With one-hot choices the supernet computes exactly the derived network whose weights are its slices."""
    rng = random.Random(seed)
    heads = HEADS if seed % 3 else (rng.choice(HEADS),)  # searched heads, and each head configured alone
    net = _supernet(blocks=rng.randint(1, 5), widths=(2, 3, 4), ops=ALL_OPS, heads=heads, seed=seed).train()
    genotype = DiscriminatorGenotype(
        tuple(rng.choice(ALL_OPS) for _ in range(net.num_blocks)),
        base_width=rng.choice(net.widths),
        norm=rng.choice(("none", "batch")),  # spectral's sigma is of the wide kernel, so not a slice
        head=HEADS[seed % 2] if len(heads) > 1 else heads[0],
    )
    net.set_genotype(genotype, confidence=60.0)
    assert net.derive() == genotype
    derived = Discriminator(genotype).train()
    _copy_slices(net, derived)
    x = torch.rand(4, 3, 11, 9)
    out, expected = net(x), derived(x)
    if genotype.head == "patch" or len(heads) == 1:
        assert out.shape == expected.shape  # (4, 1) pool, (4, N) patch
    # With the pool head chosen among both, the one logit is broadcast over the patch positions.
    assert torch.allclose(out, expected.expand_as(out), atol=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_one_hot_spectral_norm_is_the_derived_spectral_discriminator(seed):
    """At the widest width (no slicing: sigma is of the whole kernel), the shared convs divided by their sigmas are
    torch's spectral_norm: same kernels and power-iteration vectors give the same logits, step after step."""
    rng = random.Random(seed)
    net = _supernet(blocks=rng.randint(2, 4), widths=(2, 4), ops=ALL_OPS, seed=seed).train()
    genotype = DiscriminatorGenotype(
        tuple(rng.choice(ALL_OPS) for _ in range(net.num_blocks)), base_width=4, norm="spectral", head=HEADS[seed % 2]
    )
    net.set_genotype(genotype, confidence=60.0)
    derived = Discriminator(genotype).train()
    _copy_slices(net, derived)
    with torch.no_grad():
        for b, op in enumerate(genotype.blocks):
            source = net.blocks[b][net.op_names.index(op)]
            convs = [m for m in derived.blocks[b].modules() if isinstance(m, nn.Conv2d)]
            for i, conv in enumerate(convs):
                if b == 0:
                    continue  # block 0 has no normalisation
                conv.parametrizations.weight.original.copy_(source.convs[i].weight)
                conv.parametrizations.weight[0]._u.copy_(getattr(source, f"u{i}"))
                conv.parametrizations.weight[0]._v.copy_(getattr(source, f"v{i}"))
    for _ in range(3):  # each training forward takes one power iteration on both sides
        x = torch.rand(2, 3, 12, 10)
        out, expected = net(x), derived(x)
        assert torch.allclose(out, expected.expand_as(out), atol=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_one_hot_patch_head_is_the_derived_patch_discriminator(seed):
    """The patch head, searched beside the pool head, computes the derived patch discriminator's logits."""
    rng = random.Random(seed)
    net = _supernet(blocks=rng.randint(2, 6), widths=(2, 3, 4), heads=HEADS, seed=seed).train()
    genotype = DiscriminatorGenotype(
        tuple(rng.choice(D_SEARCH_SPACE) for _ in range(net.num_blocks)),
        base_width=rng.choice(net.widths),
        norm="batch",
        head="patch",
    )
    net.set_genotype(genotype, confidence=60.0)
    derived = Discriminator(genotype).train()
    _copy_slices(net, derived)
    x = torch.rand(2, 3, 16, 20)
    out = net(x)
    assert out.shape == derived(x).shape and out.shape[1] > 1
    assert torch.allclose(out, derived(x), atol=1e-5)


def _copy_slices(net: DiscriminatorSupernet, derived: Discriminator) -> None:
    """The derived network's weights := the leading slices of the supernet's (the chosen op's shared convs, its
    BatchNorm under batch norm)."""
    g = derived.genotype

    def copy(target: torch.Tensor, source: torch.Tensor) -> None:
        target.copy_(source[tuple(slice(0, n) for n in target.shape)])

    with torch.no_grad():
        for b, op in enumerate(g.blocks):
            source = net.blocks[b][net.op_names.index(op)]
            convs = [m for m in derived.blocks[b].modules() if isinstance(m, nn.Conv2d)]
            assert len(convs) == len(source.convs)
            for conv, shared in zip(convs, source.convs):
                copy(conv.weight, shared.weight)
                if conv.bias is not None:
                    copy(conv.bias, shared.bias)
            for bn in (m for m in derived.blocks[b].modules() if isinstance(m, nn.BatchNorm2d)):
                for name in ("weight", "bias", "running_mean", "running_var"):
                    copy(getattr(bn, name), getattr(source.bn, name))
        if g.head == "patch":
            conv = derived.head[0]
            conv.weight.copy_(net.patch.weight[:, : conv.in_channels])
            conv.bias.copy_(net.patch.bias)
            return
        derived.head[1].weight.copy_(net.fc1.weight[: derived.head[1].out_features, : derived.head[1].in_features])
        derived.head[1].bias.copy_(net.fc1.bias[: derived.head[1].out_features])
        derived.head[3].weight.copy_(net.fc2.weight[:, : derived.head[3].in_features])
        derived.head[3].bias.copy_(net.fc2.bias)


@pytest.mark.parametrize("seed", range(8))
def test_expected_macs_equal_exact_macs_for_one_hot(seed):
    rng = random.Random(seed)
    net = _supernet(blocks=rng.randint(1, 9), widths=(4, 8, 16), ops=ALL_OPS)
    genotype = DiscriminatorGenotype(
        tuple(rng.choice(ALL_OPS) for _ in range(net.num_blocks)),
        base_width=rng.choice(net.widths),
        norm=rng.choice(NORMS),
        head=rng.choice(HEADS),
    )
    net.set_genotype(genotype, confidence=60.0)
    assert net.expected_macs(96).item() == pytest.approx(discriminator_macs(genotype, 96, 96), rel=1e-9)
    assert net.expected_macs(20, 30).item() == pytest.approx(discriminator_macs(genotype, 20, 30), rel=1e-9)


def test_expected_macs_is_differentiable_and_between_extremes():
    net = _supernet(blocks=6, widths=(4, 8, 16))
    expected = net.expected_macs(64)
    expected.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.arch_parameters())
    blocks, head = net.macs_table(64, 64)
    cheapest = (blocks.amin(dim=(2, 3)).sum(dim=1) + head.amin(dim=1)).min()
    dearest = (blocks.amax(dim=(2, 3)).sum(dim=1) + head.amax(dim=1)).max()
    assert cheapest < expected.item() < dearest


def test_derived_discriminator_builds_runs_and_round_trips(tmp_path):
    net = _supernet(blocks=5, widths=(3, 6), norms=("spectral", "batch"))
    with torch.no_grad():
        for p in net.arch_parameters():
            p.normal_()
    genotype = net.derive()
    data = json.loads(genotype.to_json())
    assert data["kind"] == "discriminator" and len(data["blocks"]) == 5
    assert DiscriminatorGenotype.from_dict(data) == genotype
    model = Discriminator(genotype)
    logits = model(torch.rand(2, 3, 16, 16))
    assert logits.shape == (2, 1 if genotype.head == "pool" else 4 * 4)  # two stride-2 blocks: 16 -> 4
    assert torch.isfinite(logits).all()
    with pytest.raises(GenotypeError, match="unknown op"):
        DiscriminatorGenotype.from_dict(data | {"blocks": ["conv_3x3", "skip"]})


def test_set_genotype_refuses_what_the_search_space_lacks():
    net = _supernet(blocks=2, widths=(2, 4), norms=("batch",), ops=("conv_3x3", "sep_3x3"), heads=("pool",))
    with pytest.raises(ValueError, match="3 blocks"):
        net.set_genotype(DiscriminatorGenotype(("conv_3x3",) * 3, 2, "batch"))
    with pytest.raises(ValueError, match="dil_3x3"):
        net.set_genotype(DiscriminatorGenotype(("conv_3x3", "dil_3x3"), 2, "batch"))
    with pytest.raises(ValueError, match="base width 8"):
        net.set_genotype(DiscriminatorGenotype(("conv_3x3",) * 2, 8, "batch"))
    with pytest.raises(ValueError, match="norm 'none'"):
        net.set_genotype(DiscriminatorGenotype(("conv_3x3",) * 2, 2, "none"))
    with pytest.raises(ValueError, match="head 'patch'"):
        net.set_genotype(DiscriminatorGenotype(("conv_3x3",) * 2, 2, "batch", "patch"))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"blocks": 0}, "at least one block"),
        ({"ops": ("conv_3x3", "conv_7x7")}, "conv_7x7"),
        ({"base_widths": (4, 4)}, "distinct positive"),
        ({"norms": ("batch", "instance")}, "unknown norm 'instance'"),
        ({"heads": ("pool", "dense")}, "unknown head 'dense'"),
        ({"heads": ("patch", "patch")}, "heads must be distinct"),
    ],
)
def test_constructor_validation(kwargs, message):
    with pytest.raises((ValueError, KeyError), match=message):
        DiscriminatorSupernet(**({"blocks": 2, "base_widths": (2,)} | kwargs))


def test_single_width_and_norm_are_configured_not_searched():
    net = _supernet(blocks=3, widths=(4,), norms=("batch",), ops=D_SEARCH_SPACE, heads=("pool",))
    assert net.width_probs().item() == 1.0 and net.norm_probs().item() == 1.0 and net.head_probs().item() == 1.0
    assert not hasattr(net, "patch") and net(torch.rand(2, 3, 8, 8)).shape == (2, 1)  # only the configured head
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 2 * len(D_SEARCH_SPACE)  # none on block 0
    # Under batch norm alone the shared convs carry no bias (BatchNorm's shift replaces it), as in the derived net.
    assert all(op.convs[-1].bias is None for block in net.blocks[1:] for op in block)
