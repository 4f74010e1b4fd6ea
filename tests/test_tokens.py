"""The next-token family's tokeniser (next-token foundation model, section 3): showers <-> (spatial, energy)
token pairs."""

import numpy as np
import pytest

from calofm.data.tokens import END, PAD, START, Tokeniser
from calofm.data.toy import toy_showers


def test_showers_round_trip_through_tokens_up_to_half_a_bin(ds2):
    showers = toy_showers(ds2, 20, seed=0, e_min=2e3, e_max=2e4).showers
    tok = Tokeniser.fit(showers)
    assert tok.n_bins == tok.n_voxels == 6480 and tok.spatial_vocab == tok.energy_vocab == 6483
    spatial, energy, lengths = tok.encode(showers)
    np.testing.assert_array_equal(lengths, (showers > 0).sum(1) + 2)
    assert spatial.shape == energy.shape == (20, lengths.max())
    back = tok.decode(np.stack([spatial, energy], -1))
    np.testing.assert_array_equal(back > 0, showers > 0)  # the same voxels
    assert np.abs(back - showers).max() <= tok.bin_width / 2 * (1 + 1e-5)
    row = 3
    assert (spatial[row, 0], energy[row, 0]) == tok.special(START)
    assert (spatial[row, lengths[row] - 1], energy[row, lengths[row] - 1]) == tok.special(END)
    assert np.all(spatial[row, lengths[row]:] == tok.special(PAD)[0])
    deposits = showers[row, spatial[row, 1:lengths[row] - 1]]
    assert np.all(np.diff(deposits) <= 0)  # descending energy
    pairs, owners, extra = tok.rows(toy_showers(ds2, 20, seed=0, e_min=2e3, e_max=2e4))  # the model rows
    assert owners is None and extra is None
    assert pairs.shape == (20, tok.max_len, 2) and tok.max_len == (lengths.max() - 2) * 3 // 2 + 2
    np.testing.assert_array_equal(pairs[:, :lengths.max()].numpy(), np.stack([spatial, energy], axis=-1))
    assert np.all(pairs[:, lengths.max():].numpy() == tok.special(PAD))


def test_vocabularies_travel_with_the_checkpoint_and_bad_input_is_refused(ds2):
    showers = toy_showers(ds2, 4, seed=1).showers
    tok = Tokeniser.fit(showers, n_bins=100)
    assert Tokeniser.from_dict(tok.to_dict()) == tok and tok.energy_vocab == 103
    spatial, energy, _ = tok.encode(showers * 3)  # above the fitted range: the last bin
    assert energy[:, 1].max() == 99
    cut = spatial.copy()
    cut[:, 2] = tok.special(END)[0]  # generation stopped after one voxel
    assert np.all((tok.decode(np.stack([cut, energy], -1)) > 0).sum(1) == 1)
    with pytest.raises(ValueError, match="do not match 6480 voxels"):
        tok.encode(showers[:, :10])
    with pytest.raises(ValueError, match="negative or non-finite"):
        tok.encode(-showers)
    with pytest.raises(ValueError, match="no deposit"):
        Tokeniser.fit(np.zeros((2, 5)))


def test_the_depth_calibration_moves_the_top_deposits_deeper_in_the_same_cell():
    import torch

    tok = Tokeniser(n_voxels=12, bin_width=1.0, n_bins=12, max_len=6)  # 3 layers of 4 voxels
    start, end, pad = (tok.special(t)[0] for t in (START, END, PAD))
    x = torch.tensor([[[start, start], [1, 9], [6, 5], [9, 2], [end, end], [pad, pad]],
                      [[start, start], [10, 4], [end, end], [pad, pad], [pad, pad], [pad, pad]]])
    moved = tok.deeper(x, k=2, layers=1, layer_voxels=4)
    assert moved[0, :, 0].tolist() == [start, 5, 10, 9, end, pad]  # top 2 one layer deeper, the third stays
    assert moved[1, :, 0].tolist() == [start, 10, end, pad, pad, pad]  # the last layer holds; specials stay
    assert torch.equal(moved[..., 1], x[..., 1]) and torch.equal(tok.deeper(x, 0, 1, 4), x)
