"""Preprocessing, config, schedules, checkpoints and the training loop (resume, DDP)."""

import math
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import save_file

from calofm.core.errors import CalofmError, InputError
from calofm.data.preprocess import VOXEL_THRESHOLD, ConditionTransform, VoxelTransform
from calofm.generative import EDM
from calofm.models import DiT
from calofm.train import checkpoint
from calofm.train.config import TrainConfig, load_config
from calofm.train.loop import Batches, Trainer
from calofm.train.schedule import ema_decay, wsd

pytestmark = pytest.mark.usefixtures("one_thread")


# --- preprocessing ----------------------------------------------------------------------

def test_voxel_transform_is_exactly_invertible_after_the_threshold():
    rng = np.random.default_rng(0)
    x = np.where(rng.random((50, 200)) < 0.7, 0.0, rng.lognormal(-2, 2, (50, 200)))
    tf = VoxelTransform.fit([x[:25], x[25:]])
    logs = np.log(np.where(x < VOXEL_THRESHOLD, 0, x) + 1e-6)
    assert tf.mean == pytest.approx(logs.mean()) and tf.std == pytest.approx(logs.std())
    t = torch.from_numpy(x)
    y = tf.forward(t)
    assert abs(float(y.mean())) < 1e-9 and float(y.std(unbiased=False)) == pytest.approx(1.0)
    clipped = torch.where(t < VOXEL_THRESHOLD, 0, t)
    torch.testing.assert_close(tf.inverse(y), clipped, rtol=1e-12, atol=0)
    assert bool((tf.inverse(y)[clipped == 0] == 0).all())  # zeros come back as exact zeros
    assert VoxelTransform.from_dict(tf.to_dict()) == tf
    assert float(tf.inverse(y.max() + 10)) == pytest.approx(x.max())  # overshoots capped at the largest voxel


def test_condition_transform_round_trip_and_one_hot_slots():
    tf = ConditionTransform(e_max=100e3, detectors=["a", "b"], n_slots=3)
    energy, theta, phi = np.array([1e3, 5e4]), np.array([1.0, 2.0]), np.array([-3.0, 0.5])
    c = tf.forward(energy, theta, phi, tf.slot("b"))
    assert c.shape == (2, 4 + 3) and tf.n_cond == 7
    np.testing.assert_allclose(c[:, 0], energy / 100e3, rtol=1e-6)
    assert c[:, 4:].tolist() == [[0, 1, 0], [0, 1, 0]]  # slot 2 stays free for a new detector
    back = tf.inverse(c)
    np.testing.assert_allclose(back["energy"], energy, rtol=1e-6)
    np.testing.assert_allclose(back["theta"], theta, rtol=1e-6)
    np.testing.assert_allclose(back["phi"], phi, rtol=1e-5)
    with pytest.raises(CalofmError, match="unknown detector 'c'; this model knows: a, b"):
        tf.slot("c")


# --- config -----------------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("train: {lr: fast}", r"train.lr: expected float, got 'fast'"),
    ("train: {stepz: 3}", r"train.stepz: unknown key"),
    ("process: {name: cd}", r"process.teacher: cd needs the EDM run"),
    ("train: {warmup: 0.7, decay: 0.5}", r"train.warmup"),
    ("data: {detectors: {a: x.h5}}\ntrain: {precision: fp16}", r"train.precision: must be fp32 or bf16"),
])
def test_bad_config_gets_a_one_line_error_naming_file_and_key(tmp_path, text, message):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=message) as info:
        load_config(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_config_defaults_are_the_calodit2_ones_and_overrides_apply(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data: {detectors: {a: x.h5, b: [y.h5, z.h5]}}\n")
    config = load_config(path, {"train.steps": 7, "out": "r"})
    t = config.train
    assert (t.lr, t.weight_decay, t.batch_size, t.ema, t.warmup, t.decay) == (5e-4, 1e-4, 256, 0.999, 0.1, 0.4)
    assert t.steps == 7 and config.out == "r"
    assert config.data.detectors == {"a": ["x.h5"], "b": ["y.h5", "z.h5"]}


# --- schedules and batches ----------------------------------------------------------------

def test_warmup_stable_decay_schedule():
    f = [wsd(s, 100) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == 1.0           # linear warm-up over 10 %
    assert all(v == 1.0 for v in f[9:60])                       # stable for 50 %
    assert f[60] < 1 and f[99] == pytest.approx(1 - math.sqrt(40 / 41))  # square-root decay over 40 %
    assert np.all(np.diff(f[60:]) < 0)
    assert f[70] == pytest.approx(1 - math.sqrt(11 / 41))


def test_ema_decay_rises_from_zero_to_its_cap():
    assert ema_decay(0, 0.999) == 0.0
    assert 0 < ema_decay(10, 0.999) < ema_decay(100, 0.999) < 0.999
    assert ema_decay(10**6, 0.999) == 0.999


def test_batches_cover_every_shower_once_per_epoch_and_split_over_ranks():
    full = Batches(10, 4, seed=1)
    stream = np.concatenate([full(s) for s in range(5)])  # 20 indices = 2 epochs
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:]) == list(range(10))
    assert not np.array_equal(stream[:10], stream[10:])
    ranks = [Batches(10, 4, seed=1, rank=r, world=2) for r in range(2)]
    for s in range(5):
        np.testing.assert_array_equal(np.concatenate([b(s) for b in ranks]), full(s))
    with pytest.raises(ValueError, match="not divisible"):
        Batches(10, 3, seed=1, world=2)


# --- checkpoints ------------------------------------------------------------------------------

def test_checkpoint_round_trip_and_foreign_files_rejected(tmp_path):
    tensors = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([1, 2], dtype=torch.int64)}
    checkpoint.save(tmp_path / "c.safetensors", tensors, {"step": 3, "x": [1, "y"]})
    back, info = checkpoint.load(tmp_path / "c.safetensors")
    assert info == {"step": 3, "x": [1, "y"]} and (tmp_path / "c.json").exists()
    assert all(torch.equal(back[k], tensors[k]) for k in tensors)
    save_file({"a": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(InputError, match="without a calofm description"):
        checkpoint.load(tmp_path / "foreign.safetensors")
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "c.safetensors").read_bytes()[:40])
    with pytest.raises(InputError, match="cut.safetensors: not a readable safetensors checkpoint"):
        checkpoint.load(tmp_path / "cut.safetensors")
    assert not list(tmp_path.glob(".*partial*"))


# --- the loop ---------------------------------------------------------------------------------

SHAPE = (3, 4, 6)


def tiny_process(seed=0):
    torch.manual_seed(seed)
    return EDM(DiT(n_cond=5, shape=SHAPE, patch=(3, 2, 3), dim=12, depth=1, heads=2, mlp_dim=24))


def toy_data(n=40):
    g = torch.Generator().manual_seed(0)
    return torch.randn((n, *SHAPE), generator=g) * 0.5, torch.rand((n, 5), generator=g)


def settings(**kw):
    return TrainConfig(**{"steps": 12, "batch_size": 8, "log_every": 2, "checkpoint_every": 3, "lr": 1e-3,
                          "device": "cpu", **kw})


def weights(run):
    return checkpoint.load(run / "model.safetensors")[0]


def test_resumed_run_repeats_the_uninterrupted_one_exactly(tmp_path):
    x, cond = toy_data()
    Trainer(tiny_process(), x, cond, settings(), tmp_path / "a", {}, progress=False).run()
    # killed after step 7 (the last checkpoint is at step 6), then resumed by a fresh process object
    Trainer(tiny_process(), x, cond, settings(), tmp_path / "b", {}, progress=False).run(stop_at=7)
    Trainer(tiny_process(seed=99), x, cond, settings(), tmp_path / "b", {}, progress=False).run()
    a, b = ((tmp_path / r / "metrics.csv").read_text() for r in "ab")
    strip = [[row.rsplit(",", 1)[0] for row in t.splitlines()] for t in (a, b)]  # drop wall-clock seconds
    assert strip[0] == strip[1] and len(strip[0]) == 1 + 6
    wa, wb = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    losses = [float(r.split(",")[1]) for r in a.splitlines()[1:]]
    assert losses[-1] < losses[0]


def test_resume_refuses_a_run_with_other_settings(tmp_path):
    x, cond = toy_data()
    Trainer(tiny_process(), x, cond, settings(), tmp_path, {}, progress=False).run(stop_at=3)
    with pytest.raises(InputError, match="holds a run with other settings"):
        Trainer(tiny_process(), x, cond, settings(lr=2e-3), tmp_path, {}, progress=False).run()


def test_a_run_saved_before_the_particles_were_recorded_still_resumes(tmp_path):
    x, cond = toy_data()
    Trainer(tiny_process(), x, cond, settings(), tmp_path, {"voxels": 1}, progress=False).run(stop_at=7)
    resumed = Trainer(tiny_process(), x, cond, settings(), tmp_path, {"voxels": 1, "particles": {"a": "pi+"}},
                      progress=False)
    assert resumed.resume() == 6  # the information-only key is no part of what trains
    with pytest.raises(InputError, match="holds a run with other settings"):
        Trainer(tiny_process(), x, cond, settings(), tmp_path, {"voxels": 2}, progress=False).resume()


def test_ema_weights_are_what_the_model_file_holds(tmp_path):
    x, cond = toy_data()
    trainer = Trainer(tiny_process(), x, cond, settings(ema=0.9), tmp_path, {"k": 1}, progress=False)
    trainer.run()
    saved, info = checkpoint.load(tmp_path / "model.safetensors")
    assert info == {"k": 1, "step": 12}
    live = trainer.process.state_dict()
    for name, value in trainer.ema.items():
        assert torch.equal(saved[name], value) and not torch.equal(live[name], value)


def _ddp_worker(rank, world, port, out, result):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank))
    torch.set_num_threads(1)
    x, cond = toy_data()
    trainer = Trainer(tiny_process(seed=rank), x, cond, settings(steps=4), out, {}, progress=False)
    trainer.run()
    result[rank] = {k: v.clone() for k, v in trainer.process.state_dict().items()}
    torch.distributed.destroy_process_group()


def test_ddp_with_two_gloo_processes_keeps_replicas_identical(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = mp.Manager().dict()
    mp.spawn(_ddp_worker, args=(2, port, tmp_path, result), nprocs=2)
    a, b = result[0], result[1]
    assert all(torch.equal(a[k], b[k]) for k in a)  # rank 1 started from other weights: DDP synced them
    assert not all(torch.equal(a[k], tiny_process().state_dict()[k]) for k in a)
    assert (tmp_path / "model.safetensors").exists() and len((tmp_path / "metrics.csv").read_text().splitlines()) == 3


def test_torchrun_on_two_processes_trains_as_one_process_with_two_chunks(toys, tmp_path, tiny_run_config):
    """The real launcher, two gloo processes on this machine: the same weights as one process
    that cuts the same global batch into two chunks (train.accumulate 2), up to rounding; one
    process with the whole batch at once draws other noise and ends elsewhere."""
    data = {"a": str(toys / "a.h5")}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = {"ddp": {}, "chunks": {"accumulate": 2}, "whole": {}}
    for name, train in runs.items():
        config = tiny_run_config(tmp_path, name, data, 6, log_every=3, **train)
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"] \
            if name == "ddp" else [sys.executable]
        subprocess.run([*launcher, "-m", "calofm.cli.main", "train", "--config", str(config), "--no-progress"],
                       env=env, check=True, timeout=600, capture_output=True)
    weights = {name: checkpoint.load(tmp_path / name / "model.safetensors")[0] for name in runs}
    assert checkpoint.load(tmp_path / "ddp" / "checkpoint.safetensors")[1]["world"] == 2
    for key, value in weights["ddp"].items():
        torch.testing.assert_close(value, weights["chunks"][key], rtol=1e-4, atol=1e-6)
    assert any(not torch.allclose(value, weights["whole"][key], rtol=1e-3, atol=1e-5)
               for key, value in weights["ddp"].items())
