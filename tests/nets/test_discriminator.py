"""Discriminator ops, genotypes and network: shapes, cost formulas vs thop, JSON, validation, gradients."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import thop
import torch
from torch import nn

from darts_sr.losses import relativistic_discriminator_loss, relativistic_generator_loss
from darts_sr.nets.discriminator import (
    BUILTIN_DISCRIMINATORS,
    SRGAN_DISCRIMINATOR,
    Discriminator,
    DiscriminatorGenotype,
    block_layout,
    discriminator_macs,
    discriminator_params,
    load_discriminator_genotype,
    random_discriminator_genotypes,
)
from darts_sr.nets.genotype import GenotypeError
from operations.discriminator import D_OPS, D_SEARCH_SPACE, D_SEARCH_WIDTHS, HEADS, NORMS, build_d_op

SMALL = DiscriminatorGenotype(blocks=("conv_3x3", "sep_3x3", "dil_3x3", "conv_5x5", "sep_5x5"), base_width=4)
GENOTYPES = {
    "srgan_narrow": DiscriminatorGenotype(blocks=("conv_3x3",) * 8, base_width=8),
    "mixed_batch": SMALL,
    "mixed_none": DiscriminatorGenotype(blocks=SMALL.blocks, base_width=4, norm="none"),
    "mixed_spectral": DiscriminatorGenotype(blocks=SMALL.blocks, base_width=4, norm="spectral"),
    "one_block": DiscriminatorGenotype(blocks=("sep_5x5",), base_width=3),
    "patch_batch": DiscriminatorGenotype(blocks=SMALL.blocks, base_width=4, head="patch"),
    "patch_spectral": DiscriminatorGenotype(blocks=SMALL.blocks, base_width=4, norm="spectral", head="patch"),
    "patch_one_block": DiscriminatorGenotype(blocks=("conv_3x3",), base_width=3, norm="none", head="patch"),
}


def _trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _thop_macs(model: nn.Module, h: int, w: int) -> int:
    macs, _ = thop.profile(model.eval(), inputs=(torch.rand(1, 3, h, w),), verbose=False)
    return int(macs)


# --- the op table ---------------------------------------------------------------------------------------------


def test_search_space_names_exist() -> None:
    assert set(D_SEARCH_SPACE) <= set(D_OPS)
    assert set(D_OPS) == {"conv_3x3", "conv_5x5", "sep_3x3", "sep_5x5", "dil_3x3"}


def test_op_formulas_match_hand_arithmetic() -> None:
    # c_in=4, c_out=6, output 3 x 5 (15 pixels).
    assert D_OPS["conv_3x3"].params(4, 6, "none") == 6 * 4 * 9 + 6
    assert D_OPS["conv_3x3"].params(4, 6, "batch") == 6 * 4 * 9 + 2 * 6
    assert D_OPS["conv_3x3"].macs(4, 6, 3, 5, "none") == 6 * 4 * 9 * 15
    assert D_OPS["conv_3x3"].macs(4, 6, 3, 5, "batch") == 6 * 4 * 9 * 15 + 4 * 6 * 15
    assert D_OPS["sep_5x5"].params(4, 6, "spectral") == 4 * 25 + 6 * 4 + 6
    assert D_OPS["sep_5x5"].macs(4, 6, 3, 5, "spectral") == (4 * 25 + 6 * 4) * 15


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("name", sorted(D_OPS))
def test_op_shape_params_and_thop(name: str, stride: int, norm: str) -> None:
    torch.manual_seed(0)
    op = build_d_op(name, 4, 6, stride, norm)
    x = torch.randn(2, 4, 7, 10)
    y = op(x)
    assert y.shape == (2, 6, 7 if stride == 1 else 4, 10 if stride == 1 else 5)
    assert _trainable(op) == D_OPS[name].params(4, 6, norm)
    macs, _ = thop.profile(op.eval(), inputs=(x[:1],), verbose=False)
    assert int(macs) == D_OPS[name].macs(4, 6, y.shape[2], y.shape[3], norm)


@pytest.mark.parametrize("norm", NORMS)
def test_op_bias_only_without_batch_norm(norm: str) -> None:
    for name in D_OPS:
        convs = [m for m in build_d_op(name, 4, 6, 1, norm).modules() if isinstance(m, nn.Conv2d)]
        last = convs[-1]
        assert (last.bias is not None) == (norm != "batch"), name
        if norm == "spectral":
            assert all(hasattr(c, "parametrizations") for c in convs), name


def test_op_errors() -> None:
    with pytest.raises(KeyError, match="unknown discriminator operation"):
        build_d_op("conv_7x7", 4, 4, 1, "none")
    with pytest.raises(ValueError, match="unknown norm"):
        build_d_op("conv_3x3", 4, 4, 1, "instance")


# --- the genotype ---------------------------------------------------------------------------------------------


def test_reference_is_srgan() -> None:
    assert BUILTIN_DISCRIMINATORS["reference"] is SRGAN_DISCRIMINATOR
    layout = block_layout(8, 64)
    assert [(c_out, stride) for _, c_out, stride in layout] == [
        (64, 1),
        (64, 2),
        (128, 1),
        (128, 2),
        (256, 1),
        (256, 2),
        (512, 1),
        (512, 2),
    ]
    assert block_layout(10, 64)[-1] == (512, 512, 2)  # capped at 8 * base_width
    model = Discriminator(SRGAN_DISCRIMINATOR)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.blocks[0].modules())  # SRGAN's first conv: no BN
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 7
    assert model.head[1].out_features == 1024
    assert _trainable(model) == discriminator_params(SRGAN_DISCRIMINATOR)


def test_esrgan_body_is_esrgans_vgg128_convolutions() -> None:
    """ESRGAN's discriminator: conv0_0 64 (no BN), conv0_1 64 s2, 128, 128 s2, 256, 256 s2, 512, 512 s2, 512, 512 s2."""
    genotype = BUILTIN_DISCRIMINATORS["esrgan_body"]
    layout = block_layout(len(genotype.blocks), genotype.base_width)
    srgan = [(c_out, stride) for _, c_out, stride in block_layout(8, 64)]  # SRGAN's eight, checked above
    assert [(c_out, stride) for _, c_out, stride in layout] == [*srgan, (512, 1), (512, 2)]
    model = Discriminator(genotype)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 9
    assert model(torch.rand(2, 3, 128, 128)).shape[0] == 2


@pytest.mark.parametrize("genotype", [SRGAN_DISCRIMINATOR, *GENOTYPES.values()], ids=["reference", *GENOTYPES])
def test_json_round_trip(genotype: DiscriminatorGenotype, tmp_path: Path) -> None:
    data = genotype.to_dict()
    assert data["kind"] == "discriminator"
    assert DiscriminatorGenotype.from_dict(json.loads(json.dumps(data))) == genotype
    assert DiscriminatorGenotype.from_json(genotype.to_json()) == genotype
    path = tmp_path / "d.json"
    path.write_text(genotype.to_json())
    assert load_discriminator_genotype(path) == genotype
    assert load_discriminator_genotype(str(path)) == genotype


def test_defaults_and_builtin_loading() -> None:
    assert load_discriminator_genotype("reference") is SRGAN_DISCRIMINATOR
    assert DiscriminatorGenotype.from_dict({"blocks": ["conv_3x3"]}) == DiscriminatorGenotype(
        ("conv_3x3",), 64, "batch", "pool"
    )
    # A genotype written before the head was searched (no "head" key) is the pool head it was trained with.
    old = {"kind": "discriminator", "base_width": 8, "norm": "batch", "blocks": ["conv_3x3", "sep_3x3"]}
    assert DiscriminatorGenotype.from_dict(old).head == "pool"
    assert SRGAN_DISCRIMINATOR.head == "pool" and SRGAN_DISCRIMINATOR.to_dict()["head"] == "pool"
    assert DiscriminatorGenotype(blocks=["conv_3x3"]).blocks == ("conv_3x3",)


def _d(**overrides) -> dict:
    return {"kind": "discriminator", "base_width": 8, "norm": "batch", "blocks": ["conv_3x3", "sep_3x3"]} | overrides


@pytest.mark.parametrize(
    "data, message",
    [
        (["conv_3x3"], "must be a JSON object"),
        (_d(kind="generator"), "expected 'discriminator'"),
        (_d(blocks=["conv_3x3", "conv_7x7"]), "block 1: unknown op 'conv_7x7'"),
        (_d(blocks=["conv_3x3", "none"]), "block 1: unknown op 'none'"),
        (_d(norm="instance"), "unknown norm 'instance'"),
        (_d(extra=1), r"unknown key\(s\) \['extra'\]"),
        ({"base_width": 8}, r"missing key\(s\) \['blocks'\]"),
        (_d(blocks="conv_3x3"), "'blocks' must be a list"),
        (_d(blocks=[3]), "block 0 op must be str"),
        (_d(base_width="64"), "'base_width' must be int"),
        (_d(base_width=True), "'base_width' must be int"),
        (_d(norm=None), "'norm' must be str"),
        (_d(head="global"), "unknown head 'global'"),
        (_d(head=1), "'head' must be str"),
        (_d(blocks=[]), "at least one block"),
        (_d(base_width=0), "base_width must be a positive integer"),
    ],
)
def test_validation_messages(data, message: str) -> None:
    with pytest.raises(GenotypeError, match=message):
        DiscriminatorGenotype.from_dict(data)


def test_constructor_validation() -> None:
    with pytest.raises(GenotypeError, match="'blocks' must be a list of op names"):
        DiscriminatorGenotype(blocks="conv_3x3")
    with pytest.raises(GenotypeError, match="base_width must be a positive integer"):
        DiscriminatorGenotype(blocks=("conv_3x3",), base_width=-1)


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(GenotypeError, match=f"{missing}: cannot read genotype.*built-ins: reference"):
        load_discriminator_genotype(missing)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{")
    with pytest.raises(GenotypeError, match=f"{bad_json}: not valid JSON"):
        load_discriminator_genotype(bad_json)
    bad_op = tmp_path / "bad_op.json"
    bad_op.write_text(json.dumps(_d(blocks=["conv_9x9"])))
    with pytest.raises(GenotypeError, match=f"{bad_op}: block 0: unknown op"):
        load_discriminator_genotype(bad_op)


def test_describe() -> None:
    text = SRGAN_DISCRIMINATOR.describe()
    lines = text.splitlines()
    assert len(lines) == 1 + 8 + 1
    assert lines[1] == "block 0: conv_3x3 3->64 stride 1 norm none"
    assert lines[8] == "block 7: conv_3x3 512->512 stride 2 norm batch"
    assert "linear 512->1024" in lines[-1]
    assert lines[0].endswith("head pool")
    patch = DiscriminatorGenotype(blocks=("conv_3x3",) * 4, base_width=8, head="patch").describe().splitlines()
    assert patch[0].endswith("head patch") and patch[-1].startswith("head: conv 1x1 16->1")


# --- the network ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [32, 48, 96, 128])
def test_shapes_for_patch_sizes(size: int) -> None:
    model = Discriminator(DiscriminatorGenotype(blocks=("conv_3x3",) * 8, base_width=8)).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, size, size)).shape == (2, 1)
        assert model(torch.rand(1, 3, size, size + 8)).shape == (1, 1)


@pytest.mark.parametrize("hw", [(32, 32), (33, 17)])
def test_patch_head_gives_one_logit_per_position_of_the_last_map(hw: tuple[int, int]) -> None:
    genotype = DiscriminatorGenotype(blocks=("conv_3x3",) * 6, base_width=4, head="patch")  # three stride-2 blocks
    model = Discriminator(genotype).eval()
    x = torch.rand(2, 3, *hw)
    with torch.no_grad():
        logits = model(x)
        features = model.blocks(x)
    assert features.shape[2:] == (-(-hw[0] // 8), -(-hw[1] // 8))
    assert logits.shape == (2, features.shape[2] * features.shape[3])
    # Each logit is the 1 x 1 conv at its own position: the per-patch logits are kept, not averaged.
    conv = model.head[0]
    expected = torch.einsum("bchw,c->bhw", features, conv.weight.view(-1)) + conv.bias
    assert torch.allclose(logits, expected.flatten(1), atol=1e-6)
    # The relativistic losses take per-patch logits as they are (every patch is one sample).
    fake = model(torch.rand(2, 3, *hw))
    d_loss, _ = relativistic_discriminator_loss(logits, fake)
    assert torch.isfinite(d_loss) and torch.isfinite(relativistic_generator_loss(logits, fake))


@pytest.mark.parametrize("name", sorted(GENOTYPES))
@pytest.mark.parametrize("hw", [(16, 16), (13, 21)])
def test_params_and_macs_formulas_match_module_and_thop(name: str, hw: tuple[int, int]) -> None:
    genotype = GENOTYPES[name]
    model = Discriminator(genotype)
    assert _trainable(model) == discriminator_params(genotype)
    assert _thop_macs(model, *hw) == discriminator_macs(genotype, *hw)


def test_reference_macs_match_thop() -> None:
    model = Discriminator(SRGAN_DISCRIMINATOR)
    assert _thop_macs(model, 32, 32) == discriminator_macs(SRGAN_DISCRIMINATOR, 32, 32)


@pytest.mark.parametrize("name", sorted(GENOTYPES))
def test_backward_reaches_every_parameter(name: str) -> None:
    torch.manual_seed(0)
    model = Discriminator(GENOTYPES[name]).train()
    x = torch.rand(3, 3, 24, 24, requires_grad=True)
    logits = model(x)
    assert logits.shape[0] == 3 and torch.isfinite(logits).all()
    side = 24 // 2 ** (len(model.blocks) // 2)  # 24 is divisible by every stride product here
    assert logits.shape[1] == (1 if GENOTYPES[name].head == "pool" else side * side)
    logits.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname


def test_spectral_norm_bounds_conv_weights() -> None:
    torch.manual_seed(0)
    model = Discriminator(GENOTYPES["mixed_spectral"]).train()
    for _ in range(20):  # power iterations run in train-mode forwards
        model(torch.rand(2, 3, 16, 16))
    model.eval()
    convs = [m for m in model.blocks[1:].modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(hasattr(c, "parametrizations") for c in convs)
    assert not any(hasattr(c, "parametrizations") for c in model.blocks[0].modules())  # block 0: no norm
    for conv in convs:
        sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
        assert sigma.item() == pytest.approx(1.0, abs=1e-2)


# --- random genotypes (the race's candidates) -------------------------------------------------------------------


def test_random_genotypes_are_distinct_reproducible_and_in_the_space() -> None:
    space = {"blocks": 3, "ops": ("conv_3x3", "sep_3x3"), "base_widths": (4, 8), "norms": NORMS, "heads": HEADS}
    # 48 of 96: drawn one by one (below half the space); independent draws would repeat almost surely.
    drawn = random_discriminator_genotypes(48, seed=3, **space)
    assert len(drawn) == 48 and len(set(drawn)) == 48
    for g in drawn:
        assert len(g.blocks) == 3 and set(g.blocks) <= set(space["ops"])
        assert g.base_width in space["base_widths"] and g.norm in NORMS and g.head in HEADS
        Discriminator(g)  # every draw builds
    assert random_discriminator_genotypes(48, seed=3, **space) == drawn
    assert random_discriminator_genotypes(48, seed=4, **space) != drawn
    # The whole space (2**3 * 2 * 3 * 2 = 96) can be drawn, each genotype exactly once; one more cannot.
    assert len(set(random_discriminator_genotypes(96, seed=0, **space))) == 96
    with pytest.raises(ValueError, match="space of 96"):
        random_discriminator_genotypes(97, seed=0, **space)


def test_random_genotypes_cover_every_option() -> None:
    # Uniform over the space: with 200 draws every option of every choice appears (a skewed sampler that never
    # picks, e.g., the last width or the patch head fails this).
    for blocks in (8, 2):  # 200 of 6144 drawn one by one; 60 of 96, sampled from the enumerated space
        drawn = random_discriminator_genotypes(200 if blocks == 8 else 60, seed=0, blocks=blocks)
        assert {g.base_width for g in drawn} == set(D_SEARCH_WIDTHS)
        assert {g.norm for g in drawn} == set(NORMS) and {g.head for g in drawn} == set(HEADS)
        assert all({g.blocks[b] for g in drawn} == set(D_SEARCH_SPACE) for b in range(blocks))
        assert random_discriminator_genotypes(len(drawn), seed=1, blocks=blocks) != drawn


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"ops": ("conv_3x3", "conv_3x3")}, "ops must list distinct"),
        ({"heads": ()}, "heads must list distinct"),
        ({"blocks": 0}, "at least one block"),
        # Unknown candidates fail whatever the draw: a single genotype would rarely pick the bad one.
        ({"heads": ("pool", "dense")}, r"heads: unknown or invalid candidate\(s\) \['dense'\]"),
        ({"ops": ("conv_3x3", "skip")}, r"ops: unknown .*'skip'"),
        ({"base_widths": (8, 0)}, r"base_widths: unknown or invalid candidate\(s\) \[0\]"),
    ],
)
def test_random_genotypes_refuse_a_bad_space(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        random_discriminator_genotypes(1, **kwargs)
