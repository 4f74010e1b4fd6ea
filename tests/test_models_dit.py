import math

import pytest
import torch

from calofm.models import BACKBONES, DiT
from calofm.models.dit import sincos_3d

N_COND = 8
TINY = {"dim": 48, "depth": 2, "heads": 2, "mlp_dim": 96, "freq_dim": 32}


def inputs(net, batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *net.shape, generator=g)
    return x, torch.randn(batch, generator=g), torch.randn(batch, N_COND, generator=g)


def perturbed(seed=0, **kwargs):
    """A tiny DiT whose zero-initialised weights are made random, so every path is live."""
    torch.manual_seed(seed)
    net = DiT(N_COND, **{**TINY, **kwargs})
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.normal_(std=0.1)
    return net


def test_untrained_output_shape_and_exact_zero():
    torch.manual_seed(0)
    net = DiT(N_COND, **TINY)
    out = net(*inputs(net))
    assert out.shape == (3, 9, 16, 45)
    assert torch.equal(out, torch.zeros_like(out))


def test_default_model():
    net = DiT(N_COND)
    assert net.dim == 384 and net.num_tokens == 360 and len(net.blocks) == 6
    assert net.pos_embed.shape == (360, 384)
    assert "pos_embed" not in net.state_dict()
    out = net(*inputs(net, batch=2))
    assert out.shape == (2, 9, 16, 45) and not out.any()


def test_registry_and_roles():
    assert BACKBONES["dit"] is DiT
    net = DiT(N_COND, **TINY)
    for attr in DiT.ROLES.values():
        assert isinstance(getattr(net, attr), torch.nn.Module)
    assert isinstance(net.blocks, torch.nn.ModuleList)


@pytest.mark.parametrize("shape, patch", [((9, 16, 45), (3, 2, 3)), ((18, 50, 45), (3, 5, 3))])
def test_patchify_round_trip(shape, patch):
    net = DiT(N_COND, shape=shape, patch=patch, **TINY)
    x = torch.randn(2, *shape)
    tokens = net.patchify(x)
    assert tokens.shape == (2, math.prod(shape) // math.prod(patch), math.prod(patch))
    assert torch.equal(net.unpatchify(tokens), x)
    assert torch.equal(net.patchify(net.unpatchify(tokens)), tokens)


def test_patch_embed_token_order_matches_patchify():
    """Conv3d tokens = Linear on patchify's tokens, so positions and unpatchify line up."""
    net = DiT(N_COND, **TINY)
    x = torch.randn(2, *net.shape)
    conv = net.patch_embed(x[:, None]).flatten(2).transpose(1, 2)
    w, b = net.patch_embed.weight, net.patch_embed.bias
    linear = net.patchify(x) @ w.reshape(len(w), -1).T + b
    torch.testing.assert_close(conv, linear, rtol=1e-5, atol=1e-5)


def test_positional_embedding():
    grid, dim = (3, 8, 15), 48
    pe = sincos_3d(grid, dim)
    assert pe.shape == (math.prod(grid), dim)
    assert len(torch.unique(pe, dim=0)) == len(pe)
    pe = pe.reshape(*grid, 3, dim // 3)
    for axis in range(3):
        third = pe[..., axis, :].movedim(axis, 0)
        # constant along the other two axes, different for every index of its own axis
        assert torch.allclose(third, third[:, :1, :1].expand_as(third))
        assert len(torch.unique(third[:, 0, 0], dim=0)) == grid[axis]


def test_positional_embedding_is_fixed_buffer():
    net = DiT(N_COND, **TINY)
    assert all(p is not net.pos_embed for p in net.parameters())
    assert not net.pos_embed.requires_grad


def test_conditioning_changes_output():
    net = perturbed()
    x, noise, cond = inputs(net)
    with torch.no_grad():
        out = net(x, noise, cond)
        assert out.abs().mean() > 0
        assert not torch.allclose(out, net(x, noise + 0.5, cond))
        assert not torch.allclose(out, net(x, noise, cond + 0.5))
        # each sample sees only its own condition
        other = cond.clone()
        other[1:] += 0.5
        torch.testing.assert_close(net(x, noise, other)[0], out[0])


def test_gradient_reaches_every_parameter():
    net = perturbed()
    net(*inputs(net)).square().sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"shape": (9, 16, 45), "patch": (2, 2, 3)}, "not divisible by patch"),
        ({"dim": 64, "heads": 2}, "divisible by 6"),
        ({"dim": 48, "heads": 5}, "divisible by heads"),
    ],
)
def test_bad_config_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DiT(N_COND, **{**TINY, **kwargs})


def test_wrong_input_shape_raises():
    net = DiT(N_COND, **TINY)
    with pytest.raises(ValueError, match="expected voxels of shape"):
        net(torch.zeros(2, 9, 16, 44), torch.zeros(2), torch.zeros(2, N_COND))
