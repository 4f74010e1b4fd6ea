"""The next-token backbone (next-token foundation model, section 3): KV-cached decoding, causality, partial RoPE and the
fixed-routing experts."""

import pytest
import torch

from calofm.generative.autoregressive import AutoRegressive
from calofm.models.nexttoken import NextToken, rotary

SLOTS = 5  # class one-hot entries: the experts grow into them


def tiny(n_experts=3, seed=0) -> NextToken:
    torch.manual_seed(seed)
    return NextToken(n_cond=2 + SLOTS, layer_sizes=[10] * 4, n_experts=n_experts, expert_column=2, dim=32, depth=3,
                     heads=4, mlp_dim=64).eval()  # vocabularies of 43: 40 voxels, START 40, END 41, PAD 42


def batch(b=4, t=12, seed=1):
    """Token pairs, and conditions [2 kinematic values, class one-hot] of the classes x."""
    g = torch.Generator().manual_seed(seed)
    x = torch.tensor([0, 2, 1, 2])[:b]
    cond = torch.cat([torch.rand(b, 2, generator=g), torch.nn.functional.one_hot(x, SLOTS).float()], dim=1)
    return torch.randint(0, 43, (b, t), generator=g), torch.randint(0, 43, (b, t), generator=g), cond, x


@torch.no_grad()
def test_kv_cached_decoding_gives_the_logits_of_the_full_forward():
    net, (s, e, c, _) = tiny(), batch()
    full = net(s, e, c)
    cache = net.cache(len(s), s.shape[1])
    steps = [net(s[:, :5], e[:, :5], c, cache=cache, start=0)]  # prefill, then one pair at a time
    steps += [net(s[:, t:t + 1], e[:, t:t + 1], c, cache=cache, start=t) for t in range(5, 12)]
    for i in range(2):
        torch.testing.assert_close(torch.cat([step[i] for step in steps], 1), full[i], rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_logits_depend_on_the_past_only_and_on_the_condition():
    net, (s, e, c, _) = tiny(), batch()
    base = net(s, e, c)[0]
    s2 = s.clone()
    s2[:, 7:] = (s2[:, 7:] + 1) % 43
    changed = net(s2, e, c)[0]
    torch.testing.assert_close(changed[:, :7], base[:, :7])
    assert not torch.allclose(changed[:, 7:], base[:, 7:])
    assert not torch.allclose(net(s, e, c + torch.tensor([0.5, 0.5] + [0.0] * SLOTS))[0][:, 0], base[:, 0])


def test_partial_rope_rotates_the_first_half_and_keeps_norms():
    x = torch.randn(2, 3, 7, 8)
    y = rotary(x, torch.arange(7))
    torch.testing.assert_close(y[..., 4:], x[..., 4:])
    torch.testing.assert_close(y[..., :4].norm(dim=-1), x[..., :4].norm(dim=-1))
    torch.testing.assert_close(y[:, :, 0], x[:, :, 0])  # position 0: no rotation


@torch.no_grad()
def test_each_class_runs_its_own_expert_and_active_parameters_stay_constant():
    net, (s, e, c, x) = tiny(), batch()
    base = net(s, e, c)[0]
    for block in [net.cross, *net.blocks]:
        for p in block.mlp.experts[1].parameters():
            p.add_(1.0)
    moved = net(s, e, c)[0]
    torch.testing.assert_close(moved[x != 1], base[x != 1])  # classes 0 and 2 never touch expert 1
    assert not torch.allclose(moved[x == 1], base[x == 1])
    assert tiny(1).active_parameters() == tiny(3).active_parameters() == tiny(5).active_parameters()
    assert sum(p.numel() for p in tiny(5).parameters()) > sum(p.numel() for p in tiny(3).parameters())


@torch.no_grad()
def test_sampling_is_deterministic_given_the_noise_and_stops_at_the_end_token():
    process = AutoRegressive(tiny())
    _, _, cond, _ = batch()
    noise = torch.randn(4, 15, 2, generator=torch.Generator().manual_seed(5))
    out = process.sample(noise, cond)
    assert out.shape == (4, 15, 2) and torch.equal(out, process.sample(noise, cond))
    assert torch.all(out[:, 0] == 40)  # the start pair
    assert torch.equal(out, process.sample(noise, cond, decode="uncached"))  # the cache changes nothing drawn
    for row in out:
        ends = (row[:, 0] == 41).nonzero()
        assert len(ends) <= 1
        if len(ends):  # the end pair, then padding
            assert row[ends[0, 0], 1] == 41 and torch.all(row[ends[0, 0] + 1:] == 42)
    greedy = AutoRegressive(process.net, top_k=1)
    first = process.net(out[:, :1, 0], out[:, :1, 1], cond)
    drawn = greedy.sample(torch.randn(4, 2, 2), cond)[:, 1]
    masked = [lg[:, -1].clone() for lg in first]
    for lg in masked:
        lg[:, [40, 42]] = -float("inf")
    assert torch.equal(drawn[:, 1], masked[1].argmax(-1))  # top-k 1 is greedy


def test_next_token_training_lowers_the_loss_on_a_repeating_pattern(one_thread):
    torch.manual_seed(0)
    process = AutoRegressive(tiny())
    tokens = torch.stack([torch.tensor([40] + [3, 9, 27, 5] * 2 + [41, 42]),
                          torch.tensor([40] + [30, 20, 10, 0] * 2 + [41, 42])], -1)
    x0, cond = tokens.expand(8, -1, -1), batch(b=4)[2].repeat(2, 1)
    opt = torch.optim.Adam(process.parameters(), lr=3e-3)
    first = float(process(x0, cond).detach())
    for _ in range(60):
        loss = process(x0, cond)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.1 * first
    with pytest.raises(ValueError, match="temperature > 0"):
        AutoRegressive(tiny(), temperature=0)
    with pytest.raises(ValueError, match="experts for 3 classes"):
        process(x0[:1], torch.nn.functional.one_hot(torch.tensor([2 + 4]), 2 + SLOTS).float())


def mixed(net, classes):
    """Logits of one token batch whose rows belong to ``classes``."""
    s, e, _, _ = batch(b=len(classes), seed=3)
    cond = torch.cat([torch.full((len(classes), 2), 0.3),
                      torch.nn.functional.one_hot(torch.tensor(classes), SLOTS).float()], 1)
    return net(s, e, cond)


@torch.no_grad()
def test_additive_adaptation_leaves_every_earlier_class_bit_identical():
    from calofm.adapt import Adaptation, apply, restore

    net = tiny(n_experts=2)
    active = net.active_parameters()
    before = mixed(net, [0, 1, 1, 0])
    names = {"w": 0, "ta": 1}
    material = apply("expert", net, 2 + 2, {**names}, init="ta")  # a new material, from Ta's expert
    assert net.architecture() == {"n_experts": 3, "head_of_class": [0, 0, 0]} and material.adapter is None
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable and all(".experts.2." in n or "parametrizations" in n for n in trainable)
    particle = apply("particle", net, 2 + 3, {**names, "pb": 2}, init="w", r=4, alpha=4)  # a new particle
    assert net.architecture() == {"n_experts": 4, "head_of_class": [0, 0, 0, 1]}
    assert particle.adapter == {"name": "particle1", "head": 1, "r": 4, "alpha": 4.0}
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert any(".lora_A.particle1." in n for n in trainable) and any("heads.1." in n for n in trainable)
    assert not any(n.startswith(("spatial_heads.0", "energy_heads.0")) or ".experts.0." in n for n in trainable)
    for p in net.parameters():  # training moves what trains
        if p.requires_grad:
            p.add_(0.1)
    Adaptation.fold(net)  # slot deltas merge; the particle's adapter must not
    after = mixed(net, [0, 1, 1, 0])
    for a, b in zip(after, before):
        assert torch.equal(a, b)  # bit-identical, not merely close
    assert net.active_parameters() == active + sum(p.numel() for n, p in net.named_parameters() if "lora_" in n)
    new = mixed(net, [3, 3, 0, 1])
    rebuilt = restore(NextToken(n_cond=2 + SLOTS, layer_sizes=[10] * 4, expert_column=2, dim=32, depth=3, heads=4,
                                mlp_dim=64, **net.architecture()), [particle.adapter]).eval()
    rebuilt.load_state_dict(net.state_dict())  # a saved model comes back with its adapter
    for a, b in zip(mixed(rebuilt, [3, 3, 0, 1]), new):
        assert torch.equal(a, b)
    rebuilt.lora_routes = {}  # without its adapter, the new particle's rows change: the adapter is in use
    assert not torch.equal(mixed(rebuilt, [3, 3, 0, 1])[0][:2], new[0][:2])
    with pytest.raises(ValueError, match="grows by classes"):
        apply("full", tiny(), 2 + 3)
    with pytest.raises(ValueError, match="init must name"):
        apply("expert", tiny(), 2 + 3, names, init="lead")
    with pytest.raises(ValueError, match="is not the next class"):
        apply("expert", tiny(n_experts=2), 2 + 4, names, init="w")
    with pytest.raises(ValueError, match="already class 1"):
        apply("expert", tiny(n_experts=2), 2 + 1, names, init="w")


@torch.no_grad()
def test_fixed_shape_decoding_step_draws_the_tokens_of_the_cached_one():
    """The step a CUDA graph captures (whole cache, masked; no device sync) against the KV cache,
    for a batch of one class and one of mixed classes and particles (class 3 has its own heads)."""
    net = tiny(3)
    net.add_class(1, new_particle=True)
    process = AutoRegressive(net)
    noise = torch.randn(5, 12, 2, generator=torch.Generator().manual_seed(7))
    kinematics = torch.rand(5, 2, generator=torch.Generator().manual_seed(8))
    for classes in ([2] * 5, [0, 2, 1, 3, 3]):
        cond = torch.cat([kinematics, torch.nn.functional.one_hot(torch.tensor(classes), SLOTS).float()], 1)
        assert net.routes(cond) == (sorted(set(classes)), [0, 1] if 3 in classes else [0])
        cached = process.sample(noise, cond)
        assert (cached[:, 1:, 0] < 40).sum() > 10  # voxels were drawn, not only end and padding
        assert torch.equal(process.sample(noise, cond, decode="static"), cached)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 experts write into the fp32 cache and output
        for decode in ("cached", "static"):  # (the last cond: mixed classes and particles)
            tokens = process.sample(noise, cond, decode=decode)
            assert tokens.shape == cached.shape and torch.all((tokens >= 0) & (tokens <= 42))
    with pytest.raises(ValueError, match="CUDA graph"):
        process.sample(noise, cond, decode="graph")
    with pytest.raises(ValueError, match="decode 'fast'"):
        process.sample(noise, cond, decode="fast")
