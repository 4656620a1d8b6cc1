"""The stage-2 hypergradient against finite differences of the unrolled generator step."""

import pytest
import torch
import torch.nn.functional as F

from darts_sr.d_architect import cross_hypergradient
from darts_sr.d_supernet import DiscriminatorSupernet
from darts_sr.genotype import GeneratorGenotype, Node
from darts_sr.losses import GeneratorLoss, LossWeights
from darts_sr.networks import Generator

pytestmark = pytest.mark.usefixtures("one_thread")


TINY_G = GeneratorGenotype(nodes=(Node("conv_3x3", 0), Node("sep_3x3", 1)), outputs=(1, 2), channels=3, scale=2)


def _problem(norms=("none", "batch")):
    torch.manual_seed(0)
    generator = Generator(TINY_G).double()
    d = DiscriminatorSupernet(blocks=3, base_widths=(2, 3), norms=norms, ops=("conv_3x3", "sep_3x3", "dil_3x3"))
    d = d.double()
    with torch.no_grad():
        for p in d.arch_parameters():
            p.normal_(0, 0.5)
    d.set_weights_trainable(False)
    # A strong adversarial weight so the discriminator's architecture visibly moves the generator.
    criterion = GeneratorLoss(LossWeights(pixel=1.0, adversarial=0.5))
    lr_t, hr_t = torch.rand(3, 3, 5, 5, dtype=torch.float64), torch.rand(3, 3, 10, 10, dtype=torch.float64)
    lr_v, hr_v = torch.rand(3, 3, 5, 5, dtype=torch.float64), torch.rand(3, 3, 10, 10, dtype=torch.float64)

    def train_loss(g):
        sr = g(lr_t)
        return criterion(sr, hr_t, d(hr_t), d(sr))[0]

    def val_loss(g):
        return F.l1_loss(g(lr_v), hr_v)

    return generator, d, train_loss, val_loss


def _unrolled_val_loss(generator, train_loss, val_loss, xi) -> float:
    """L_val(w - xi * dL_train/dw) at the current architecture, weights restored afterwards."""
    weights = list(generator.parameters())
    w0 = [p.detach().clone() for p in weights]
    grads = torch.autograd.grad(train_loss(generator), weights)
    with torch.no_grad():
        for p, g in zip(weights, grads):
            p.sub_(xi * g)
        value = val_loss(generator).item()
        for p, w in zip(weights, w0):
            p.copy_(w)
    return value


@pytest.mark.parametrize("norms", [("none", "batch"), ("batch",)])
def test_hypergradient_matches_finite_differences(norms):
    generator, d, train_loss, val_loss = _problem(norms)
    xi = 0.05
    arch = d.arch_parameters()
    cross_hypergradient(arch, generator, train_loss, val_loss, xi)
    analytic = torch.cat([p.grad.flatten() for p in arch])

    h, numeric = 1e-6, []
    for p in arch:
        for i in range(p.numel()):
            with torch.no_grad():
                p.view(-1)[i] += h
            up = _unrolled_val_loss(generator, train_loss, val_loss, xi)
            with torch.no_grad():
                p.view(-1)[i] -= 2 * h
            down = _unrolled_val_loss(generator, train_loss, val_loss, xi)
            with torch.no_grad():
                p.view(-1)[i] += h
            numeric.append((up - down) / (2 * h))
    numeric = torch.tensor(numeric, dtype=torch.float64)
    assert numeric.norm() > 0
    relative = (analytic - numeric).norm() / numeric.norm()
    assert relative < 0.05, f"relative error {relative:.3g}"
    # Every kind of architecture parameter that is searched receives gradient.
    assert d.alpha.grad.abs().sum() > 0 and d.alpha_width.grad.abs().sum() > 0
    if len(norms) > 1:
        assert d.alpha_norm.grad.abs().sum() > 0


def test_generator_untouched_and_only_arch_grads_set():
    generator, d, train_loss, val_loss = _problem()
    before = [p.detach().clone() for p in generator.parameters()]
    loss = cross_hypergradient(d.arch_parameters(), generator, train_loss, val_loss, xi=0.1)
    assert loss.ndim == 0 and not loss.requires_grad
    for p, b in zip(generator.parameters(), before):
        assert torch.equal(p, b) and p.grad is None
    assert all(p.grad is None for p in d.weight_parameters())
    assert all(p.grad is not None for p in d.arch_parameters())


def test_xi_must_be_positive():
    generator, d, train_loss, val_loss = _problem()
    with pytest.raises(ValueError, match="xi"):
        cross_hypergradient(d.arch_parameters(), generator, train_loss, val_loss, xi=0.0)
