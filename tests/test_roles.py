"""Every backbone's ROLES, the contract through which the transfer strategies act on it."""

import pytest
from torch import nn

from calofm.adapt import apply
from calofm.geometry import calochallenge_binning
from calofm.models import BACKBONES

SMALL = {"dit": {"patch": [3, 4, 5], "dim": 24, "depth": 2, "heads": 2, "mlp_dim": 48},
         "vit": {"patch": [5, 16, 3], "dim": 24, "depth": 2, "heads": 2, "mlp_dim": 48,
                 "energy": {"dim": 64, "heads": 2, "encoder_layers": 1, "decoder_layers": 1, "ff_dim": 16}},
         "showerflow": {"hidden": [16, 16]},
         "pointwise": {},
         "nexttoken": {"dim": 16, "depth": 2, "heads": 2, "mlp_dim": 32}}
REQUIRED = ("input", "noise", "condition", "blocks", "output")
# parts deliberately outside every role: they train under scratch, full and BitFit only
# (CaloDREAM++'s energy-network transformer; the next-token model's cross-attention block)
ROLELESS = {"vit": ("energy.transformer.",), "nexttoken": ("cross.",)}


def build(name):
    family = BACKBONES[name]
    return family(**family.geometry_args(calochallenge_binning("dataset_2"), SMALL[name]), n_cond=7)


def role_paths(roles):
    return {role: [value] if isinstance(value, str) else list(value) for role, value in roles.items()}


def test_every_backbone_has_a_small_configuration():
    assert set(SMALL) == set(BACKBONES)


@pytest.mark.parametrize("name", [n for n in BACKBONES if hasattr(BACKBONES[n], "ROLES")])
def test_roles_name_real_parts_and_cover_the_backbone(name):
    net = build(name)
    paths = role_paths(type(net).ROLES)
    assert set(REQUIRED) <= set(paths) <= {*REQUIRED, "position"}
    for role, found in paths.items():
        for path in found:
            assert any(True for _ in net.get_submodule(path).parameters()), (role, path)  # a part that trains
    assert isinstance(net.get_submodule(paths["blocks"][0]), nn.ModuleList) and len(paths["blocks"]) == 1
    assert len(net.get_submodule(paths["blocks"][0])) >= 1
    prefixes = tuple(p + "." for found in paths.values() for p in found)
    outside = [n for n, _ in net.named_parameters() if not n.startswith(prefixes)]
    assert all(n.startswith(ROLELESS.get(name, ())) for n in outside), outside
    for prefix in ROLELESS.get(name, ()):  # each documented exception exists
        assert any(n.startswith(prefix) for n in outside), prefix


def test_a_backbone_without_roles_gets_only_the_role_free_strategies():
    assert not hasattr(BACKBONES["showerflow"], "ROLES")
    apply("full", build("showerflow"), 4 + 2)
    with pytest.raises(TypeError, match="ShowerFlow does not declare the role 'blocks'"):
        apply("top-k", build("showerflow"), 4 + 2)
