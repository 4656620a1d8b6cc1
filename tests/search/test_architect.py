"""The bilevel step: second-order architecture gradient against finite differences."""

import pytest
import torch
import torch.nn.functional as F

from darts_sr.search.architect import adam_preconditioner, arch_gradients
from darts_sr.search.supernet import GeneratorSupernet


def _tiny_problem():
    torch.manual_seed(0)
    net = GeneratorSupernet(nodes=2, channels=2, scale=2, ops=("conv_3x3", "sep_3x3", "skip")).double()
    with torch.no_grad():
        for p in net.arch_parameters():
            p.normal_(0, 0.5)
    lr_t, hr_t = torch.rand(2, 3, 5, 5, dtype=torch.float64), torch.rand(2, 3, 10, 10, dtype=torch.float64)
    lr_v, hr_v = torch.rand(2, 3, 5, 5, dtype=torch.float64), torch.rand(2, 3, 10, 10, dtype=torch.float64)
    train_loss = lambda: F.mse_loss(net(lr_t), hr_t)  # noqa: E731
    val_loss = lambda: F.mse_loss(net(lr_v), hr_v)  # noqa: E731
    return net, train_loss, val_loss


@pytest.mark.parametrize("preconditioned", [False, True])
def test_second_order_gradient_matches_finite_differences(preconditioned):
    """DARTS's SGD virtual step, and the same with a diagonal preconditioner (the shape of Adam's step)."""
    net, train_loss, val_loss = _tiny_problem()
    xi = 0.5
    arch, weights = net.arch_parameters(), net.weight_parameters()
    gen = torch.Generator().manual_seed(1)
    scales = [0.2 + torch.rand(p.shape, generator=gen, dtype=p.dtype) for p in weights] if preconditioned else None
    arch_gradients(arch, weights, train_loss, val_loss, order="second", xi=xi, precondition=scales)
    analytic = torch.cat([p.grad.flatten() for p in arch])

    def unrolled_val_loss() -> float:
        # L_val(w - xi * P dL_train/dw, a) for the current a, weights restored afterwards.
        w0 = [p.detach().clone() for p in weights]
        grads = torch.autograd.grad(train_loss(), weights)
        with torch.no_grad():
            for i, (p, g) in enumerate(zip(weights, grads)):
                p.sub_(xi * (g if scales is None else scales[i] * g))
            value = val_loss().item()
            for p, w in zip(weights, w0):
                p.copy_(w)
        return value

    h, numeric = 1e-5, []
    for p in arch:
        for i in range(p.numel()):
            with torch.no_grad():
                p.view(-1)[i] += h
            up = unrolled_val_loss()
            with torch.no_grad():
                p.view(-1)[i] -= 2 * h
            down = unrolled_val_loss()
            with torch.no_grad():
                p.view(-1)[i] += h
            numeric.append((up - down) / (2 * h))
    numeric = torch.tensor(numeric, dtype=torch.float64)
    relative = (analytic - numeric).norm() / numeric.norm()
    assert relative < 0.05, f"relative error {relative:.3g}"
    # The second-order correction matters here, so the test would notice it missing.
    first = torch.cat([g.flatten() for g in torch.autograd.grad(val_loss(), arch)])
    assert (first - numeric).norm() / numeric.norm() > 5 * relative


def test_weights_restored_and_only_arch_grads_set():
    net, train_loss, val_loss = _tiny_problem()
    before = [p.detach().clone() for p in net.weight_parameters()]
    arch_gradients(net.arch_parameters(), net.weight_parameters(), train_loss, val_loss, order="second", xi=0.1)
    for p, b in zip(net.weight_parameters(), before):
        assert torch.equal(p, b)
        assert p.grad is None
    assert all(p.grad is not None for p in net.arch_parameters())


def test_first_order_is_plain_validation_gradient():
    net, train_loss, val_loss = _tiny_problem()
    arch_gradients(net.arch_parameters(), net.weight_parameters(), train_loss, val_loss, order="first")
    expected = torch.autograd.grad(val_loss(), net.arch_parameters())
    for p, g in zip(net.arch_parameters(), expected):
        assert torch.allclose(p.grad, g)


def test_unknown_order_is_refused():
    net, train_loss, val_loss = _tiny_problem()
    with pytest.raises(ValueError, match="third"):
        arch_gradients(net.arch_parameters(), net.weight_parameters(), train_loss, val_loss, order="third")


def test_adam_preconditioner_makes_the_virtual_step_the_size_of_adams_step():
    net, train_loss, _ = _tiny_problem()
    weights = net.weight_parameters()
    optimizer = torch.optim.Adam(weights, lr=1e-3)
    assert adam_preconditioner(optimizer, weights) == [None] * len(weights)  # no state yet
    for _ in range(3):
        optimizer.zero_grad()
        train_loss().backward()
        optimizer.step()
    before = [p.detach().clone() for p in weights]
    optimizer.zero_grad()
    train_loss().backward()
    grads = [p.grad.clone() for p in weights]
    scales = adam_preconditioner(optimizer, weights)
    optimizer.step()
    real = torch.cat([(b - p.detach()).flatten() for b, p in zip(before, weights)]).norm()
    virtual = torch.cat([(1e-3 * s * g).flatten() for s, g in zip(scales, grads)]).norm()
    plain = torch.cat([(1e-3 * g).flatten() for g in grads]).norm()
    assert 0.3 < virtual / real < 3  # the preconditioned virtual step is of Adam's size...
    assert plain / real < 0.1  # ...where DARTS's plain one (xi = Adam's learning rate) is far smaller
