"""The CaloChallenge classifier test: models, input builders, splits and the AUC/JSD protocol."""

import numpy as np
import pytest
import torch

from calofm.evaluate.classifier import (
    DNN,
    ClassifierInputError,
    ResNet3D,
    classifier_test,
    low_level_inputs,
    low_normed_inputs,
    resnet_inputs,
    split_sizes,
)

SMALL = {"hidden": 32}  # a narrow DNN keeps these tests fast


pytestmark = pytest.mark.usefixtures("one_thread")


def gaussians(n_ref, n_gen, d=8, shift=0.0, seed=0):
    rng = np.random.default_rng(seed)
    ref = rng.normal(size=(n_ref, d)).astype(np.float32)
    gen = (rng.normal(size=(n_gen, d)) + shift).astype(np.float32)
    return ref, gen


def run(ref, gen, **kw):
    # a higher learning rate than the protocol's 2e-4: three epochs must be enough here
    opts = dict(epochs=3, batch_size=250, lr=1e-3, model_kwargs=SMALL)
    opts.update(kw)
    return classifier_test(ref, gen, **opts)


# ------------------------------------------------------------------ the protocol


def test_identical_distributions_give_auc_one_half_and_small_jsd():
    ref, gen = gaussians(5000, 5000)
    res = run(ref, gen)
    assert abs(res["auc"] - 0.5) < 0.05
    assert abs(res["jsd"]) < 0.05
    assert res["auc_std"] == 0.0 and len(res["repeats"]) == 1


def test_shifted_distributions_are_separated():
    ref, gen = gaussians(3000, 3000, shift=1.0)
    res = run(ref, gen)
    assert res["auc"] > 0.8
    assert res["jsd"] > 0.2
    assert res["repeats"][0]["auc_uncalibrated"] > 0.8


def test_splits_follow_fractions_balanced_without_overlap():
    ref, gen = gaussians(1000, 700)  # unbalanced: 700 events per class are used
    res = run(ref, gen, epochs=1, fractions=(0.5, 0.3, 0.2))
    assert res["n_per_class"] == {"train": 350, "test": 210, "val": 140}
    assert (res["n_train"], res["n_test"], res["n_val"]) == (700, 420, 280)
    idx = res["repeats"][0]["indices"]
    for cls, n_avail in (("generated", 700), ("reference", 1000)):
        parts = [idx[s][cls] for s in ("train", "test", "val")]
        assert [len(p) for p in parts] == [350, 210, 140]
        allrows = np.concatenate(parts)
        assert len(np.unique(allrows)) == len(allrows)  # no event in two splits
        assert allrows.min() >= 0 and allrows.max() < n_avail
    # the larger class is subsampled at random, not by its first rows
    assert idx["train"]["reference"].max() >= 700 or idx["val"]["reference"].max() >= 700


def test_split_sizes_give_rounding_leftovers_to_validation():
    assert split_sizes(101) == (60, 20, 21)
    assert split_sizes(100_000) == (60_000, 20_000, 20_000)
    assert split_sizes(100, (0.5, 0.2, 0.1)) == (50, 20, 10)  # fractions adding up to less than one


def test_tiny_sample_raises_clear_value_error():
    ref, gen = gaussians(100, 4)
    with pytest.raises(ValueError, match="4 events per class"):
        run(ref, gen)
    with pytest.raises(ValueError, match="fractions"):
        run(*gaussians(100, 100), fractions=(0.8, 0.3, 0.2))
    with pytest.raises(ValueError, match="features"):
        run(ref, gen[:, :3])
    bad = ref.copy()
    bad[5, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        run(bad, gaussians(100, 100)[1])
    assert issubclass(ClassifierInputError, ValueError)


def test_same_seed_same_result_and_global_rng_untouched():
    ref, gen = gaussians(600, 600, shift=0.3)
    state = torch.get_rng_state()
    a = run(ref, gen, seed=7, repeats=2)
    assert torch.equal(state, torch.get_rng_state())
    b = run(ref, gen, seed=7, repeats=2)
    assert a["auc"] == b["auc"] and a["jsd"] == b["jsd"] and a["best_epochs"] == b["best_epochs"]
    for ra, rb in zip(a["repeats"], b["repeats"]):
        assert ra["history"] == rb["history"]
        np.testing.assert_array_equal(ra["indices"]["val"]["reference"], rb["indices"]["val"]["reference"])
    # the repeats use seeds seed + i: different splits, and a std over them
    assert [r["seed"] for r in a["repeats"]] == [7, 8]
    r0, r1 = a["repeats"]
    assert not np.array_equal(r0["indices"]["train"]["generated"], r1["indices"]["train"]["generated"])
    assert a["auc_std"] > 0
    c = run(ref, gen, seed=8)
    assert c["auc"] == r1["auc"]


def test_options_select_by_loss_extras_float64_and_progress():
    ref, gen = gaussians(500, 500)  # identical features...
    e_ref = np.zeros((500, 1), np.float32)
    e_gen = np.full(500, 3.0, np.float32)  # ...only the extra column separates the classes
    res = run(ref.astype(np.float64), gen, extra_reference=e_ref, extra_generated=e_gen,
              select_by="loss", progress=True, epochs=3, lr=1e-2)
    assert res["select_by"] == "loss" and res["auc"] > 0.95 and res["jsd"] > 0.9
    hist = res["repeats"][0]["history"]
    assert res["best_epochs"][0] == 1 + int(np.argmin([h["test_loss"] for h in hist]))
    with pytest.raises(ValueError, match="model"):
        run(ref, gen, model="bdt")


# ------------------------------------------------------------------ models


def test_dnn_structure_matches_reference():
    m = DNN(10, hidden=16)
    linear = [x for x in m.layers if isinstance(x, torch.nn.Linear)]
    assert [(layer.in_features, layer.out_features) for layer in linear] == [(10, 16), (16, 16), (16, 16), (16, 1)]
    assert sum(isinstance(x, torch.nn.LeakyReLU) for x in m.layers) == 3
    assert all(x.p == 0.0 for x in m.layers if isinstance(x, torch.nn.Dropout))
    assert DNN(6481).layers[0].out_features == 2048


def test_resnet3d_forward_on_dataset2_shape():
    torch.manual_seed(0)
    net = ResNet3D(shape=(45, 16, 9)).eval()
    x = torch.rand(3, 1, 45, 16, 9)
    e = torch.log10(torch.tensor([1e3, 1e4, 1e5]))
    with torch.no_grad():
        out = net(x, e)
        out_flat = net(x.reshape(3, -1), e.reshape(3, 1))
    assert out.shape == (3, 1) and torch.isfinite(out).all()
    torch.testing.assert_close(out, out_flat)
    assert net.fc.in_features == 128 + 1
    n_blocks = sum(len(stage) for stage in net.stages)
    assert n_blocks == 8  # ResNet-18: 1 stem conv + 8 blocks x 2 convs + 1 fc


@pytest.mark.slow  # non-finite outputs seen once in a full clean-clone run, never reproduced alone: investigate
def test_resnet3d_trains_one_epoch_on_toy_set():
    rng = np.random.default_rng(0)
    shape = (6, 4, 3)
    showers = rng.exponential(size=(80, 72)).astype(np.float32)
    e_inc = rng.uniform(1e3, 1e5, size=80)
    x, log_e = resnet_inputs(showers, e_inc)
    res = classifier_test(
        x[:40], x[40:], model="cnn", shape=shape, epochs=1, batch_size=16,
        extra_reference=log_e[:40], extra_generated=log_e[40:],
        model_kwargs={"widths": (4, 4, 8, 8), "blocks": (1, 1, 1, 1)},
    )
    assert res["model"] == "cnn" and res["best_epochs"] == [1]
    assert 0.0 <= res["auc"] <= 1.0 and np.isfinite(res["jsd"])
    with pytest.raises(ValueError, match="extra_generated"):
        classifier_test(x[:40], x[40:], model="cnn", shape=shape, epochs=1)
    with pytest.raises(ValueError, match="voxels"):
        classifier_test(x[:40], x[40:], model="cnn", shape=(5, 4, 3), epochs=1,
                        extra_reference=log_e[:40], extra_generated=log_e[40:])


# ------------------------------------------------------------------ inputs


def test_low_level_inputs():
    showers = np.array([[1.0, 2.0, 0.0], [10.0, 0.0, 30.0]])
    e_inc = np.array([[100.0], [1000.0]])
    x = low_level_inputs(showers, e_inc)
    assert x.dtype == np.float32 and x.shape == (2, 4)
    np.testing.assert_allclose(x, [[2.0, 0.01, 0.02, 0.0], [3.0, 0.01, 0.0, 0.03]], rtol=1e-6)
    np.testing.assert_allclose(low_level_inputs(showers, e_inc, scale=100.0)[:, 1:], 100 * x[:, 1:], rtol=1e-6)
    vox, log_e = resnet_inputs(showers, e_inc)
    np.testing.assert_allclose(vox, 100 * x[:, 1:], rtol=1e-6)
    assert log_e.shape == (2, 1) and log_e.dtype == np.float32
    with pytest.raises(ValueError, match="positive"):
        low_level_inputs(showers, np.array([1.0, 0.0]))


def test_low_normed_inputs():
    showers = np.array([[1.0, 3.0, 5.0, 0.0, 0.0], [2.0, 2.0, 0.0, 6.0, 2.0]], dtype=np.float32)
    e_inc = np.array([10.0, 100.0])
    x = low_normed_inputs(showers, e_inc, [2, 3])  # layer 0: voxels 0-1, layer 1: voxels 2-4
    assert x.dtype == np.float32 and x.shape == (2, 1 + 5 + 2)
    np.testing.assert_allclose(x[:, 0], [1.0, 2.0])
    np.testing.assert_allclose(x[:, 1:6], [[0.25, 0.75, 1.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.75, 0.25]], rtol=1e-6)
    np.testing.assert_allclose(x[:, 6:], np.log10(np.array([[4.0, 5.0], [4.0, 8.0]]) + 1e-8), rtol=1e-6)
    y = low_normed_inputs(showers, e_inc, [slice(0, 2), slice(2, 5)])
    np.testing.assert_array_equal(x, y)
    empty_layer = low_normed_inputs(np.zeros((1, 5), np.float32), [10.0], [2, 3])
    assert np.all(np.isfinite(empty_layer)) and np.all(empty_layer[:, 1:6] == 0)
    with pytest.raises(ValueError, match="cover"):
        low_normed_inputs(showers, e_inc, [2, 2])
