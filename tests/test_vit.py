"""CaloDREAM++ pieces: layer-energy ratios, the layer-ratio representation, patching of regular and
irregular geometries, the positional embedding, the energy network and the strategies on the family."""

import math

import numpy as np
import pytest
import torch

from calofm.adapt import Adaptation, apply
from calofm.data.preprocess import (
    LayerRatioTransform,
    energies_from_ratios,
    layer_ratios,
)
from calofm.data.representations import representation_from_dict
from calofm.data.toy import toy_showers
from calofm.geometry import PlanarGrid, calochallenge_binning, layer_grids
from calofm.models.vit import CaloDREAM, EnergyNet, Patching, PatchPositions, _resize_patch
from calofm.simulate.detectors import get_detector, preset_names
from conftest import pretrained_like

TINY = {"dim": 48, "depth": 2, "heads": 2, "mlp_dim": 64,
        "energy": {"dim": 64, "heads": 2, "encoder_layers": 1, "decoder_layers": 1, "ff_dim": 32}}


def test_stick_breaking_ratios_invert_exactly():
    rng = np.random.default_rng(0)
    energy = torch.tensor(rng.exponential(1.0, (50, 7)), dtype=torch.float64)
    energy[:5, 3:] = 0  # showers that stop early: ratios of nothing are 0
    energy[5, :] = 0
    incident = torch.tensor(rng.uniform(10, 20, 50), dtype=torch.float64)  # E_total <= 2 E_inc
    u = layer_ratios(energy, incident, 2.0)
    assert torch.all((u >= 0) & (u <= 1))
    torch.testing.assert_close(u[:, 0], energy.sum(1) / (2.0 * incident))
    torch.testing.assert_close(u[:, 1], energy[:, 0] / energy.sum(1).clamp(min=1e-30))
    torch.testing.assert_close(energies_from_ratios(u, incident, 2.0), energy, rtol=1e-12, atol=1e-12)
    # any model output is a valid shower: clamped ratios give non-negative layers summing to u_0 s E
    wild = torch.tensor(rng.normal(0.5, 1.0, (20, 7)))
    out = energies_from_ratios(wild, incident[:20], 2.0)
    assert torch.all(out >= 0)
    torch.testing.assert_close(out.sum(1), wild[:, 0].clamp(min=0) * 2.0 * incident[:20])


@pytest.mark.parametrize("binning", ["dataset_2", "dataset_1_photons", "dataset_1_pions"])
def test_layer_ratio_representation_round_trips(binning):
    readout = calochallenge_binning(binning)
    showers = toy_showers(readout, 30, seed=1, e_min=2e3, e_max=5e4)
    rows = np.where(showers.showers < 0.01515, 0, showers.showers)
    tf = LayerRatioTransform.fit([(showers.showers, showers.energy, readout)])
    assert tf.n_layers == sum(1 for a, r in readout.layer_shapes() if a * r) and sum(tf.layer_sizes) == readout.n_voxels
    x = tf.encode(showers.showers, showers.energy)
    assert x.shape == (30, *tf.state_shape(readout)) == (30, tf.n_layers + readout.n_voxels)
    assert abs(float(x[:, :tf.n_layers].mean())) < 1e-4 and abs(float(x[:, tf.n_layers:].std()) - 1) < 1e-3
    np.testing.assert_allclose(tf.decode(x, showers.energy), rows, rtol=2e-4, atol=1e-6)
    assert representation_from_dict(tf.to_dict()) == tf
    with pytest.raises(ValueError, match="do not match this model's"):
        tf.encode(showers.showers[:, 1:], showers.energy)


def box_grids(readout, patch):
    return [(shape, patch) for shape in layer_grids(readout.layer_shapes())]


@pytest.mark.parametrize("preset", preset_names())
def test_patching_round_trips_on_every_preset(preset):
    detector = get_detector(preset)
    for readout, patch in ((detector.mesh_binning(), (3, 16, 1)), (detector.readout(), (3, 5, 5))):
        patching = Patching(box_grids(readout, patch))
        x = torch.randn(2, readout.n_voxels)
        tokens = patching.patchify(x)
        assert tokens.shape[1:] == (patching.n_tokens, math.prod(patch))
        assert torch.equal(patching.unpatchify(tokens), x)


def test_patching_irregular_geometries_pads_inside_and_round_trips():
    for name, n_tokens in (("dataset_1_photons", 8 + 32 + 38 + 5 + 5), ("dataset_1_pions", None)):
        readout = calochallenge_binning(name)
        patching = Patching(box_grids(readout, (1, 5, 1)))  # CaloDREAM++ (table A3): 5 alpha bins
        x = torch.randn(3, readout.n_voxels)
        assert torch.equal(patching.unpatchify(patching.patchify(x)), x)
        if n_tokens:
            assert patching.n_tokens == n_tokens
        # one-alpha-bin layers are padded with zeros: 4 of 5 voxels of their patches
        first = patching.patchify(x)[:, :8]
        assert torch.equal(first[..., 1:], torch.zeros_like(first[..., 1:]))
        assert torch.equal(first[..., 0], x[:, :8])
    # an ECAL + HCAL pair (CaloDREAM++'s CaloHadronic): two grids, P_tot = 75 with different patches
    grids = [((10, 15, 15), (5, 5, 3)), ((48, 30, 30), (3, 5, 5))]
    patching = Patching(grids)
    x = torch.randn(2, 10 * 15 * 15 + 48 * 30 * 30)
    assert patching.n_tokens == 2 * 3 * 5 + 16 * 6 * 6
    assert torch.equal(patching.unpatchify(patching.patchify(x)), x)
    with pytest.raises(ValueError, match="same number of voxels"):
        Patching([((10, 15, 15), (5, 5, 3)), ((48, 30, 30), (3, 5, 4))])


def test_positional_embedding_follows_equations_13_to_16():
    patching = Patching([((4, 6, 2), (2, 3, 1)), ((3, 6, 4), (1, 3, 2))])  # patch grids (2,2,2), (3,2,2)
    coords = patching.coordinates()
    assert coords.shape == (8 + 12, 3)
    torch.testing.assert_close(coords[:8, 2].unique(), torch.tensor([0.0, 1 / 5]))  # z cumulative, L = 5
    torch.testing.assert_close(coords[8:, 2].unique(), torch.tensor([2 / 5, 3 / 5, 4 / 5]))
    torch.testing.assert_close(coords[:, 0].unique(), torch.tensor([0.0, 0.5]))  # x, y local to each grid
    torch.manual_seed(0)
    assert abs(float(PatchPositions(coords, 6 * 4000).freqs.std()) / (2 * math.pi) - 1) < 0.05  # w = 2 pi N(0, 1)
    pos = PatchPositions(coords, 12)
    w = pos.freqs.detach()
    assert w.shape == (2,) and pos.freqs.requires_grad
    i = 9
    x, y, z = coords[i]
    expected = torch.cat([torch.sin(x * w), torch.cos(x * w), torch.sin(y * w), torch.cos(y * w),
                          torch.sin(z * w), torch.cos(z * w)])
    torch.testing.assert_close(pos()[i], expected)


def test_energy_network_tokens_are_value_onehot_padding_and_it_predicts_all_layers_at_once():
    net = EnergyNet(n_cond=3, n_layers=5, dim=16, heads=2, encoder_layers=1, decoder_layers=1, ff_dim=8)
    assert torch.all(net.cond_embed.weight == 0)  # at initialisation the condition tokens are eq. 8 exactly
    seen = {}
    net.transformer.register_forward_hook(lambda m, args, out: seen.update(src=args[0], tgt=args[1]))
    cond, u = torch.tensor([[0.5, -1.0, 2.0]]), torch.rand(1, 5)
    v = net(u, torch.tensor([0.3]), cond)
    assert v.shape == (1, 5)
    expected = torch.zeros(3, 16)
    expected[:, 0], expected[range(3), [1, 2, 3]] = cond[0], 1.0
    torch.testing.assert_close(seen["src"][0], expected)
    assert torch.equal(seen["tgt"][0, :, 0], u[0]) and torch.equal(seen["tgt"][0, :, 1:6], torch.eye(5))
    with pytest.raises(ValueError, match="must exceed the number of conditions"):
        EnergyNet(n_cond=3, n_layers=20, dim=16)


N_COND, NEW_SLOT = 4 + 3, 4 + 2


def tiny(seed=0) -> CaloDREAM:
    args = CaloDREAM.geometry_args(calochallenge_binning("dataset_2"), TINY)
    return pretrained_like(lambda: CaloDREAM(N_COND, **args), seed)


def outputs(net, slot):
    g = torch.Generator().manual_seed(2)
    cond = torch.zeros(3, N_COND)
    cond[:, :4] = torch.rand(3, 4, generator=g)
    cond[:, 4 + slot] = 1
    u, x, t = torch.randn(3, 45, generator=g), torch.randn(3, 6480, generator=g), torch.rand(3, generator=g)
    return torch.cat([net.energy(u, t, cond), net.shape(x, t, torch.cat([cond, u], 1))], dim=1)


def test_every_strategy_works_on_the_vit_family():
    total = sum(p.numel() for p in tiny().parameters())
    for strategy, args in (("full", {}), ("bitfit", {}), ("top-k", {"k": 1}), ("condition", {}), ("slot", {}),
                           ("lora", {"r": 2, "alpha": 2}), ("reinit", {}), ("scratch", {})):
        net = tiny()
        a = apply(strategy, net, NEW_SLOT, **args)
        names = {n for n, p in net.named_parameters() if p.requires_grad}
        assert 0 < a.trainable <= a.base_parameters == total, strategy
        if strategy == "slot":  # one delta column in each network's condition input
            assert len(names) == 2 and all(n.endswith("delta") for n in names)
            assert a.trainable == TINY["dim"] + TINY["energy"]["dim"]
        if strategy == "top-k":
            assert not any(n.startswith("shape.blocks.0.") for n in names) and any("blocks.1." in n for n in names)
            assert any(n.startswith("energy.cond_embed") for n in names)
        if strategy == "reinit":
            scaled = {n.split(".")[0] + "." + n.split(".")[1] for n in a.lr_scale}
            assert scaled == {"shape.patch_embed", "shape.pos_embed", "shape.final", "energy.head"}
        if strategy == "lora":
            assert all("lora_" in n or n.endswith("delta") for n in names)
        Adaptation.fold(net)
        assert set(net.state_dict()) == set(tiny().state_dict()), strategy


@torch.no_grad()
def test_slot_adaptation_of_the_vit_family_leaves_known_detectors_bit_identical():
    net, base = tiny(), tiny()
    apply("slot", net, NEW_SLOT)
    for n, p in net.named_parameters():
        if n.endswith("delta"):
            p.normal_(0, 0.5)
    Adaptation.fold(net)
    net.requires_grad_(True)  # as a saved model loads: frozen weights would pick another attention kernel
    assert torch.equal(outputs(net, 0), outputs(base, 0)) and torch.equal(outputs(net, 1), outputs(base, 1))
    new, old = outputs(net, 2), outputs(base, 2)
    assert not torch.equal(new[:, :45], old[:, :45]) and not torch.equal(new[:, 45:], old[:, 45:])


def test_patch_weights_resize_by_trilinear_interpolation():
    rows = torch.randn(4, 3 * 16 * 1)
    torch.testing.assert_close(_resize_patch(rows, (3, 16, 1), (3, 16, 1)), rows)
    flat = torch.full((2, 48), 0.7)
    torch.testing.assert_close(_resize_patch(flat, (3, 16, 1), (1, 5, 1)), torch.full((2, 5), 0.7))
    ramp = torch.arange(16.0).repeat(3)[None]  # linear along alpha: stays linear, end to end
    resized = _resize_patch(ramp, (3, 16, 1), (3, 8, 1)).reshape(3, 8)
    assert torch.all(resized.diff(dim=1) > 0) and torch.allclose(resized[0], resized[2])


def test_vit_geometry_arguments_from_a_readout():
    planar = PlanarGrid.from_layer_thicknesses(6, 6, 5.0, [1.0] * 4)
    args = CaloDREAM.geometry_args(planar, {"patch": [2, 3, 3], "dim": 12})
    assert args == {"dim": 12, "grids": [[[4, 6, 6], [2, 3, 3]]]}
    photons = calochallenge_binning("dataset_1_photons")
    with pytest.raises(ValueError, match="2 patches for 4 grids"):
        CaloDREAM.geometry_args(photons, {"patch": [[1, 5, 1], [1, 5, 1]]})
