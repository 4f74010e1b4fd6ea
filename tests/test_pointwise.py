"""The PointWise net (CaloClouds II transfer study, appendix B) under EDM, and the transfer strategies on it."""

import numpy as np
import pytest
import torch
from scipy.stats import wasserstein_distance
from torch import nn

from calofm.adapt import Adaptation, apply
from calofm.generative import EDM
from calofm.models.pointwise import WIDTHS, PointWise
from conftest import pretrained_like

N_COND, NEW_SLOT = 4 + 3, 4 + 2


def test_six_concat_squash_layers_of_table_8():
    net = PointWise(N_COND)
    assert [(b.layer.in_features, b.layer.out_features) for b in net.blocks] == list(zip(WIDTHS, WIDTHS[1:]))
    x, label, cond = torch.randn(5, 4), torch.randn(5), torch.randn(5, N_COND)
    assert net(x, label, cond).shape == (5, 4)
    sets = torch.randn(5, 30, 4)  # point sets share their shower's context
    out = net(sets, label, cond)
    torch.testing.assert_close(out[:, 7], net(sets[:, 7], label, cond), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="must start and end"):
        PointWise(N_COND, widths=(4, 8, 3))


def points(cond, rng):
    """Toy shower points: positions spread with the condition, energies log-normal around it."""
    n = len(cond)
    c = cond[:, :1]
    xy = rng.normal(0, 0.2 + 0.3 * c, (n, 2))
    z = rng.uniform(-1, 1, (n, 1)) * (0.5 + 0.5 * c)
    e = rng.normal(-1 + 2 * c, 0.3, (n, 1))
    return torch.tensor(np.concatenate([xy, z, e], axis=1), dtype=torch.float32)


def test_edm_with_pointwise_learns_conditional_points(one_thread):
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    process = EDM(PointWise(1, widths=(4, 64, 128, 64, 4), ctx_dim=32), sigma_data=1.0, steps=12)
    untrained = EDM(PointWise(1, widths=(4, 64, 128, 64, 4), ctx_dim=32), sigma_data=1.0, steps=12)
    opt = torch.optim.Adam(process.parameters(), lr=3e-3)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 800)
    for _ in range(800):
        cond = rng.uniform(0, 1, (512, 1))
        loss = process(points(cond, rng), torch.tensor(cond, dtype=torch.float32))
        opt.zero_grad()
        loss.backward()
        opt.step()
        decay.step()
    for c in (0.2, 0.9):
        cond = np.full((3000, 1), c)
        truth = points(cond, rng).numpy()
        noise = torch.randn(3000, 4, generator=torch.Generator().manual_seed(1))
        good = process.sample(noise, torch.tensor(cond, dtype=torch.float32)).numpy()
        bad = untrained.sample(noise, torch.tensor(cond, dtype=torch.float32)).numpy()
        for k in range(4):
            w_good, w_bad = wasserstein_distance(good[:, k], truth[:, k]), wasserstein_distance(bad[:, k], truth[:, k])
            assert w_good < 0.06 and w_good < 0.3 * w_bad, (c, k, w_good, w_bad)


def tiny(seed=0) -> PointWise:
    return pretrained_like(lambda: PointWise(N_COND, widths=(4, 16, 32, 16, 8, 16, 4), ctx_dim=16), seed)


def inputs(slot):
    g = torch.Generator().manual_seed(3)
    cond = torch.zeros(6, N_COND)
    cond[:, :4] = torch.rand(6, 4, generator=g)
    cond[:, 4 + slot] = 1
    return torch.randn(6, 4, generator=g), torch.rand(6, generator=g), cond


def test_every_strategy_works_on_pointwise():
    total = sum(p.numel() for p in tiny().parameters())
    for strategy, args in (("scratch", {}), ("full", {}), ("bitfit", {}), ("top-k", {"k": 2}), ("lora", {"r": 2}),
                           ("condition", {}), ("slot", {}), ("reinit", {})):
        net = tiny()
        a = apply(strategy, net, NEW_SLOT, **args)
        names = {n for n, p in net.named_parameters() if p.requires_grad}
        assert 0 < a.trainable <= total == a.base_parameters, strategy
        # the CaloClouds II transfer study's Top2: the two output-side layers and the time-step embedding
        if strategy == "top-k":
            assert {n.split(".")[0] + "." + n.split(".")[1] for n in names if n.startswith("blocks")} == {
                "blocks.4", "blocks.5"} and any(n.startswith("time_embed") for n in names)
        if strategy == "lora":
            linears = [m for m in tiny().blocks.modules() if isinstance(m, nn.Linear)]
            assert a.trainable == sum(2 * (m.in_features + m.out_features) for m in linears) + 8
        if strategy == "reinit":
            assert {n.split(".")[1] for n in a.lr_scale} == {"0", "5"}
        Adaptation.fold(net)
        assert set(net.state_dict()) == set(tiny().state_dict()), strategy


@torch.no_grad()
def test_slot_adaptation_of_pointwise_leaves_known_detectors_bit_identical():
    net, base = tiny(), tiny()
    apply("slot", net, NEW_SLOT)
    next(p for n, p in net.named_parameters() if n.endswith("delta")).normal_(0, 0.5)
    Adaptation.fold(net)
    net.requires_grad_(True)
    assert torch.equal(net(*inputs(0)), base(*inputs(0))) and torch.equal(net(*inputs(1)), base(*inputs(1)))
    assert not torch.equal(net(*inputs(2)), base(*inputs(2)))
