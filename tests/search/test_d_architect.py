"""The stage-2 hypergradient against finite differences of the unrolled generator steps; its mean over batches."""

import pytest
import torch
import torch.nn.functional as F

from darts_sr.losses import GeneratorLoss, LossWeights
from darts_sr.nets.genotype import GeneratorGenotype, Node
from darts_sr.nets.networks import Generator
from darts_sr.search.discriminator_architect import cross_hypergradient, mean_hypergradient
from darts_sr.search.discriminator_supernet import DiscriminatorSupernet

pytestmark = pytest.mark.usefixtures("one_thread")


TINY_G = GeneratorGenotype(nodes=(Node("conv_3x3", 0), Node("sep_3x3", 1)), outputs=(1, 2), channels=3, scale=2)


def _problem(norms=("none", "batch"), heads=("pool",)):
    torch.manual_seed(0)
    generator = Generator(TINY_G).double()
    d = DiscriminatorSupernet(3, (2, 3), norms, ("conv_3x3", "sep_3x3", "dil_3x3"), heads)
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


def _unrolled_val_loss(generator, train_losses, val_loss, xi, scales=None) -> float:
    """L_val after the steps w <- w - xi * P * dL_train_t/dw at the current architecture, weights restored
    afterwards: the plain definition the hypergradient must match."""
    weights = list(generator.parameters())
    w0 = [p.detach().clone() for p in weights]
    for train_loss in train_losses:
        grads = torch.autograd.grad(train_loss(generator), weights)
        with torch.no_grad():
            for p, g, s in zip(weights, grads, scales or [None] * len(weights)):
                p.sub_(xi * (g if s is None else s * g))
    with torch.no_grad():
        value = val_loss(generator).item()
        for p, w in zip(weights, w0):
            p.copy_(w)
    return value


def _finite_difference_gradient(arch, generator, train_losses, val_loss, xi, scales=None) -> torch.Tensor:
    h, numeric = 1e-6, []
    for p in arch:
        for i in range(p.numel()):
            with torch.no_grad():
                p.view(-1)[i] += h
            up = _unrolled_val_loss(generator, train_losses, val_loss, xi, scales)
            with torch.no_grad():
                p.view(-1)[i] -= 2 * h
            down = _unrolled_val_loss(generator, train_losses, val_loss, xi, scales)
            with torch.no_grad():
                p.view(-1)[i] += h
            numeric.append((up - down) / (2 * h))
    return torch.tensor(numeric, dtype=torch.float64)


@pytest.mark.parametrize("norms", [("none", "batch"), ("batch",)])
def test_hypergradient_matches_finite_differences(norms):
    generator, d, train_loss, val_loss = _problem(norms)
    xi = 0.05
    arch = d.arch_parameters()
    cross_hypergradient(arch, generator, train_loss, val_loss, xi)
    analytic = torch.cat([p.grad.flatten() for p in arch])
    numeric = _finite_difference_gradient(arch, generator, [train_loss], val_loss, xi)
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


def _second_train_loss(d):
    """A training loss on another batch, for the second unrolled step."""
    lr, hr = torch.rand(2, 3, 5, 5, dtype=torch.float64), torch.rand(2, 3, 10, 10, dtype=torch.float64)
    criterion = GeneratorLoss(LossWeights(pixel=1.0, adversarial=0.5))

    def train_loss(g):
        sr = g(lr)
        return criterion(sr, hr, d(hr), d(sr))[0]

    return train_loss


def test_two_unrolled_preconditioned_steps_match_finite_differences():
    """T = 2 virtual steps, each scaled per coordinate (an Adam-like P): the hypergradient through both steps,
    the generator's own Hessian included, equals the finite difference of the plain unrolled definition."""
    generator, d, train_loss, val_loss = _problem(heads=("pool", "patch"))
    torch.manual_seed(1)
    scales = [0.5 + torch.rand_like(p) for p in generator.parameters()]
    train_losses, xi = [train_loss, _second_train_loss(d)], 0.05
    arch = d.arch_parameters()
    cross_hypergradient(arch, generator, train_losses, val_loss, xi, precondition=scales)
    analytic = torch.cat([p.grad.flatten() for p in arch])
    numeric = _finite_difference_gradient(arch, generator, train_losses, val_loss, xi, scales)
    relative = (analytic - numeric).norm() / numeric.norm()
    assert relative < 0.05, f"relative error {relative:.3g}"
    assert d.alpha_head.grad.abs().sum() > 0  # the head choice is steered too
    # The second step matters: one step alone gives another gradient.
    cross_hypergradient(arch, generator, train_losses[:1], val_loss, xi, precondition=scales)
    one_step = torch.cat([p.grad.flatten() for p in arch])
    assert (one_step - analytic).norm() > 0.05 * analytic.norm()


def test_mean_hypergradient_is_the_mean_of_single_batch_hypergradients():
    generator, d, train_loss, val_loss = _problem()
    arch = d.arch_parameters()
    problems = []
    for k in range(3):
        torch.manual_seed(10 + k)
        lr_v, hr_v = torch.rand(2, 3, 5, 5, dtype=torch.float64), torch.rand(2, 3, 10, 10, dtype=torch.float64)
        problems.append(([_second_train_loss(d)], lambda g, lr_v=lr_v, hr_v=hr_v: F.l1_loss(g(lr_v), hr_v)))
    singles, losses = [], []
    for train_losses, val in problems:
        losses.append(cross_hypergradient(arch, generator, train_losses, val, xi=0.1))
        singles.append(torch.cat([p.grad.flatten() for p in arch]))
    loss, samples = mean_hypergradient(arch, generator, problems, xi=0.1)
    assert samples.shape == (3, sum(p.numel() for p in arch))
    assert torch.allclose(samples, torch.stack(singles))
    mean = torch.cat([p.grad.flatten() for p in arch])
    assert torch.allclose(mean, torch.stack(singles).mean(dim=0))
    assert not torch.allclose(mean, singles[0])  # the batches differ, so the mean is not any one of them
    assert loss.item() == pytest.approx(sum(x.item() for x in losses) / 3)
