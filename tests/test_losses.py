"""Losses: perceptual (VGG19), relativistic GAN terms, and the weighted generator loss.

ImageNet weights cannot be downloaded here, so the VGG19 backbone is randomly initialised in these tests
(``allow_random=True`` with an empty weights directory). That is enough for the properties tested: zero at
identity, gradient flow, freezing, layer choice. It is never a real perceptual loss.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from darts_sr.losses import (
    ESRGAN_WEIGHTS,
    LOSSES,
    VGG19_CONV_INDEX,
    GeneratorLoss,
    LossTerm,
    LossWeights,
    PerceptualLoss,
    relativistic_discriminator_loss,
    relativistic_discriminator_terms,
    relativistic_generator_loss,
)
from darts_sr.pretrained import PretrainedWeightsMissing


@pytest.fixture(scope="module")
def perceptual(tmp_path_factory: pytest.TempPathFactory) -> PerceptualLoss:
    """A randomly initialised VGG19 up to conv5_4 (built once: VGG19's random init takes seconds)."""
    torch.manual_seed(0)
    return PerceptualLoss("conv5_4", pretrained_dir=tmp_path_factory.mktemp("no_weights"), allow_random=True)


def _images(seed: int, n: int = 2, size: int = 16) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_missing_weights_raise_without_allow_random(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # restored after the test
    torch.hub.set_dir(str(tmp_path / "torch_home" / "hub"))
    with pytest.raises(PretrainedWeightsMissing, match="vgg19"):
        PerceptualLoss()


def test_layer_index_mapping() -> None:
    # torchvision's vgg19().features is make_layers(cfgs["E"]); built directly to skip the classifier's slow init.
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["E"])
    convs = [i for i, m in enumerate(features) if isinstance(m, nn.Conv2d)]
    assert list(VGG19_CONV_INDEX.values()) == convs
    assert VGG19_CONV_INDEX["conv5_4"] == 34 and VGG19_CONV_INDEX["conv1_1"] == 0 and VGG19_CONV_INDEX["conv2_1"] == 5
    with pytest.raises(ValueError, match="unknown VGG19 layer"):
        PerceptualLoss("conv6_1", allow_random=True)


def test_features_end_at_the_conv_before_its_relu(perceptual: PerceptualLoss) -> None:
    assert perceptual.pretrained is False
    assert len(perceptual.features) == 35
    assert isinstance(perceptual.features[-1], nn.Conv2d)
    assert sum(isinstance(m, nn.MaxPool2d) for m in perceptual.features) == 4


def test_perceptual_zero_at_identity_positive_otherwise(perceptual: PerceptualLoss) -> None:
    x, y = _images(1), _images(2)
    assert perceptual(x, x).item() == 0.0
    assert perceptual(x, y).item() > 0.0


def test_perceptual_gradient_reaches_sr_not_vgg(perceptual: PerceptualLoss) -> None:
    sr = _images(3).requires_grad_(True)
    hr = _images(4).requires_grad_(True)
    perceptual(sr, hr).backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    assert hr.grad is None  # targets are computed under no_grad
    for name, p in perceptual.named_parameters():
        assert not p.requires_grad and p.grad is None, name


def test_perceptual_stays_in_eval_mode(perceptual: PerceptualLoss) -> None:
    parent = nn.ModuleDict({"loss": perceptual}).train()
    assert parent.training
    assert not perceptual.training and not any(m.training for m in perceptual.modules())


def test_perceptual_normalises_with_imagenet_statistics(perceptual: PerceptualLoss) -> None:
    x = _images(5, n=1)
    expected = perceptual.features(
        (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    )
    torch.testing.assert_close(perceptual._features(x), expected)


def _bce(x: float, target: float) -> float:
    """Binary cross-entropy of one logit, by hand."""
    p = 1 / (1 + math.exp(-x))
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


def test_relativistic_losses_match_hand_computation() -> None:
    real = torch.tensor([[1.0], [-0.5]])
    fake = torch.tensor([[0.25], [-1.0], [2.0]])
    mean_real, mean_fake = 0.25, 1.25 / 3
    d_real = sum(_bce(r - mean_fake, 1.0) for r in (1.0, -0.5)) / 2
    d_fake = sum(_bce(f - mean_real, 0.0) for f in (0.25, -1.0, 2.0)) / 3
    g_real = sum(_bce(r - mean_fake, 0.0) for r in (1.0, -0.5)) / 2
    g_fake = sum(_bce(f - mean_real, 1.0) for f in (0.25, -1.0, 2.0)) / 3

    terms = relativistic_discriminator_terms(real, fake)
    assert set(terms) == {"l_d_real", "l_d_fake"}
    assert terms["l_d_real"].item() == pytest.approx(d_real, rel=1e-6)
    assert terms["l_d_fake"].item() == pytest.approx(d_fake, rel=1e-6)
    total, named = relativistic_discriminator_loss(real, fake)
    assert total.item() == pytest.approx((d_real + d_fake) / 2, rel=1e-6) and named.keys() == terms.keys()
    assert relativistic_generator_loss(real, fake).item() == pytest.approx((g_real + g_fake) / 2, rel=1e-6)


def test_relativistic_generator_gradient_reaches_fake_logits() -> None:
    real = torch.randn(4, 1)
    fake = torch.randn(4, 1, requires_grad=True)
    relativistic_generator_loss(real, fake).backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0


def test_loss_weight_presets_and_validation() -> None:
    assert dict(ESRGAN_WEIGHTS) == {"pixel": 1e-2, "perceptual": 1.0, "adversarial": 5e-3, "feature_matching": 0.0}
    assert dict(LossWeights(pixel=1.0)) == {"pixel": 1.0, "perceptual": 0.0, "adversarial": 0.0, "feature_matching": 0}
    with pytest.raises(ValueError, match="unknown loss term"):
        LossWeights(pixle=1.0)
    with pytest.raises(ValueError, match="'pixel'"):
        LossWeights(pixel=-1.0, perceptual=0.0, adversarial=0.0)
    with pytest.raises(ValueError, match="all loss weights are 0"):
        LossWeights(pixel=0.0, perceptual=0.0, adversarial=0.0)


def test_generator_loss_pixel_only() -> None:
    loss = GeneratorLoss(LossWeights(pixel=1.0))
    assert not loss.needs_discriminator
    sr, hr = _images(6), _images(7)
    total, terms = loss(sr, hr)
    assert set(terms) == {"l_g_pix"}
    torch.testing.assert_close(total, (sr - hr).abs().mean())


def test_generator_loss_esrgan_terms_are_weighted(perceptual: PerceptualLoss) -> None:
    loss = GeneratorLoss(ESRGAN_WEIGHTS, {"perceptual": perceptual})
    assert loss.needs_discriminator
    sr, hr = _images(8), _images(9)
    real, fake = torch.randn(2, 1), torch.randn(2, 1)
    total, terms = loss(sr, hr, real, fake)
    assert set(terms) == {"l_g_pix", "l_g_percep", "l_g_gan"}
    torch.testing.assert_close(terms["l_g_pix"], 1e-2 * (sr - hr).abs().mean())
    torch.testing.assert_close(terms["l_g_percep"], 1.0 * perceptual(sr, hr))
    torch.testing.assert_close(terms["l_g_gan"], 5e-3 * relativistic_generator_loss(real, fake))
    torch.testing.assert_close(total, terms["l_g_pix"] + terms["l_g_percep"] + terms["l_g_gan"])


def test_generator_loss_requires_what_its_weights_need(perceptual: PerceptualLoss) -> None:
    with pytest.raises(ValueError, match="'perceptual' has weight 1.0 but no module"):
        GeneratorLoss(ESRGAN_WEIGHTS)
    loss = GeneratorLoss(LossWeights(pixel=1.0, adversarial=0.5))
    with pytest.raises(ValueError, match="real_logits and fake_logits"):
        loss(_images(10), _images(11))
    _, terms = loss(_images(10), _images(11), torch.randn(2, 1), torch.randn(2, 1))
    assert set(terms) == {"l_g_pix", "l_g_gan"}


def test_a_new_loss_is_one_table_entry_plus_its_function() -> None:
    """A toy term added to a copy of the table: the config grows a key with its default, and the loss computes
    and logs it, with nothing else touched."""
    from darts_sr.config import from_dict, make_loss_config

    def mean_brightness(x, _module) -> torch.Tensor:
        return (x.sr.mean() - x.gt.mean()).abs()

    table = {**LOSSES, "brightness": LossTerm("l_g_bright", 0.25, mean_brightness)}
    config_class = make_loss_config(table)
    assert config_class().brightness == 0.25
    config = from_dict(config_class, {"pixel": 1.0, "perceptual": 0.0, "adversarial": 0.0, "brightness": 0.5})
    loss = GeneratorLoss.from_config(config, table)
    sr, gt = _images(12), _images(13)
    total, terms = loss(sr, gt)
    assert set(terms) == {"l_g_pix", "l_g_bright"}
    torch.testing.assert_close(terms["l_g_bright"], 0.5 * (sr.mean() - gt.mean()).abs())
    torch.testing.assert_close(total, terms["l_g_pix"] + terms["l_g_bright"])
    with pytest.raises(Exception, match="brightnes"):
        from_dict(make_loss_config(LOSSES), {"brightness": 0.5})  # not in the real table: an unknown key


def test_feature_matching_is_the_mean_block_l1_and_trains_through_the_gan_step() -> None:
    from darts_sr.nets.discriminator import SRGAN_DISCRIMINATOR, Discriminator
    from darts_sr.nets.genotype import GeneratorGenotype, Node
    from darts_sr.nets.networks import Generator
    from darts_sr.training.gan import gan_step
    from darts_sr.training.runner import NonFiniteGuard

    torch.manual_seed(0)
    d = Discriminator(SRGAN_DISCRIMINATOR.__class__(**{**SRGAN_DISCRIMINATOR.__dict__, "base_width": 4}))
    sr, gt = torch.rand(2, 3, 32, 32, requires_grad=True), torch.rand(2, 3, 32, 32)
    fake_logits, fake = d.forward_features(sr)
    real_logits, real = d.forward_features(gt)
    assert torch.equal(fake_logits, d(sr)) and len(fake) == len(d.blocks)
    loss = GeneratorLoss(LossWeights(feature_matching=1.0))
    total, terms = loss(sr, gt, real_logits, fake_logits, real, fake)
    by_hand = sum((a - b).abs().mean() for a, b in zip(fake, real)) / len(fake)
    assert set(terms) == {"l_g_fm"} and torch.allclose(total, by_hand)
    with pytest.raises(ValueError, match="needs the discriminator's features"):
        loss(sr, gt, real_logits, fake_logits)
    # Through BasicSR's step: the generator learns from D's features, D from its own loss.
    g = Generator(GeneratorGenotype((Node("conv_3x3", 0),), (1,), channels=4))
    g_opt, d_opt = torch.optim.Adam(g.parameters(), 1e-3), torch.optim.Adam(d.parameters(), 1e-3)
    before = [p.detach().clone() for p in g.parameters()]
    weighted = GeneratorLoss(LossWeights(pixel=1.0, adversarial=0.005, feature_matching=0.1))
    out = gan_step(g, d, torch.rand(2, 3, 8, 8), gt, weighted, g_opt, d_opt, list(g.parameters()), NonFiniteGuard(3), 0)
    assert {"l_g_fm", "l_g_gan", "l_g_pix", "l_d_real", "l_d_fake"} <= set(out)
    assert any(not torch.equal(a, b) for a, b in zip(before, g.parameters()))
