"""Transfer strategies (calofm.adapt), `calofm adapt` and `calofm study` on a tiny DiT and toy showers."""

import json

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from calofm.adapt import STRATEGIES, Adaptation, Strategy, apply
from calofm.adapt.strategies import parts
from calofm.cli.main import main
from calofm.data import write_showers
from calofm.data.toy import toy_showers
from calofm.geometry import calochallenge_binning
from calofm.inference import load_model
from calofm.models.dit import DiT
from calofm.train import assemble
from calofm.train.checkpoint import load as load_checkpoint
from calofm.train.config import RunConfig, from_dict
from calofm.workflow import study as study_module
from calofm.workflow.study import mean_error, summarise
from conftest import pretrained_like

TINY = {"patch": [3, 4, 5], "dim": 72, "depth": 2, "heads": 4, "mlp_dim": 144}  # conftest.TINY_DIT too
N_COND = 4 + 3   # kinematics + 2 pre-training detectors + 1 free slot
NEW_SLOT = 4 + 2


def tiny(seed=0) -> DiT:
    return pretrained_like(lambda: DiT(N_COND, **TINY), seed)


def inputs(slot: int, n: int = 3):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 9, 16, 45, generator=g)
    cond = torch.zeros(n, N_COND)
    cond[:, :4] = torch.rand(n, 4, generator=g)
    cond[:, 4 + slot] = 1.0
    return x, torch.full((n,), 0.3), cond


def trainable(net):
    return {n for n, p in net.named_parameters() if p.requires_grad}


def numel(module):
    return sum(p.numel() for p in module.parameters())


def test_each_strategy_trains_what_it_says():
    total = numel(tiny())
    half = TINY["dim"] // 2  # the condition input layer's width: one column per slot

    net = tiny()
    a = apply("full", net, NEW_SLOT)
    assert a.trainable == total == a.base_parameters and a.percent == 100

    net = tiny()
    a = apply("bitfit", net, NEW_SLOT)
    biases = sum(p.numel() for n, p in net.named_parameters() if n.endswith("bias"))
    assert a.trainable == biases + half
    assert all(n.endswith("bias") or n.endswith("delta") for n in trainable(net))

    net = tiny()
    a = apply("top-k", net, NEW_SLOT, k=1)
    assert a.trainable == numel(net.blocks[1]) + numel(net.time_embed) + numel(net.cond_embed)
    assert not any(n.startswith("blocks.0.") for n in trainable(net))

    net = tiny()
    assert apply("condition", net, NEW_SLOT).trainable == numel(net.cond_embed)

    net = tiny()
    a = apply("slot", net, NEW_SLOT)
    assert a.trainable == half and 0 < a.percent < 1

    net = tiny()
    a = apply("lora", net, NEW_SLOT, r=4, alpha=8)
    linears = [m for m in tiny().blocks.modules() if isinstance(m, nn.Linear)]
    assert a.trainable == sum(4 * (m.in_features + m.out_features) for m in linears) + half

    net = tiny()
    a = apply("reinit", net, NEW_SLOT)
    assert a.trainable == total
    scaled = {n for n, s in a.lr_scale.items() if s == 5.0}
    assert scaled == {n for n, _ in net.named_parameters() if n.startswith(("patch_embed.", "final."))}


def test_reinit_and_scratch_reset_the_right_weights():
    before = tiny().state_dict()
    net = tiny()
    apply("reinit", net, NEW_SLOT)
    after = net.state_dict()
    assert not torch.equal(after["patch_embed.weight"], before["patch_embed.weight"])
    assert torch.all(after["final.linear.weight"] == 0)  # the DiT's own init: the head starts at zero
    assert torch.equal(after["blocks.0.attn.qkv.weight"], before["blocks.0.attn.qkv.weight"])
    net = tiny()
    apply("scratch", net, NEW_SLOT)
    assert not torch.equal(net.state_dict()["blocks.0.attn.qkv.weight"], before["blocks.0.attn.qkv.weight"])


def test_bad_strategy_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown strategy 'lorra'"):
        apply("lorra", tiny(), NEW_SLOT)
    with pytest.raises(ValueError, match="unknown argument 'rank'"):
        apply("lora", tiny(), NEW_SLOT, rank=4)
    with pytest.raises(ValueError, match="k must be in 1..2"):
        apply("top-k", tiny(), NEW_SLOT, k=3)


@pytest.fixture
def registry():
    """The strategies as they are: one that a test defines leaves with the test."""
    known = dict(STRATEGIES)
    yield STRATEGIES
    STRATEGIES.clear()
    STRATEGIES.update(known)


def test_a_new_strategy_is_one_class(registry, capsys):
    class Head(Strategy):
        """the output part only (+ the new detector slot); with bias=False, its weights only"""

        name, lr, args, slot_delta = "head", 3e-4, {"bias": True}, True

        def prepare(self, net, bias):
            for part in parts(net, "output"):
                for name, p in part.named_parameters():
                    p.requires_grad_(bias or not name.endswith("bias"))

    assert registry["head"] is Head
    with pytest.raises(SystemExit):
        main(["adapt", "--help"])
    listed = " ".join(capsys.readouterr().out.split())
    assert "head: the output part only" in listed and "head: bias=True" in listed and "head 0.0003" in listed

    net, before = tiny(), tiny().state_dict()
    a = apply("head", net, NEW_SLOT)
    assert a.args == {"bias": True} and a.trainable == numel(net.final) + TINY["dim"] // 2
    assert trainable(net) == {n for n, _ in net.final.named_parameters(prefix="final")} | {
        "cond_embed.0.parametrizations.weight.0.delta"}
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    net(*inputs(slot=2)).square().mean().backward()
    opt.step()
    Adaptation.fold(net)
    moved = {k for k, v in net.state_dict().items() if not torch.equal(v, before[k])}
    assert moved == {*net.final.state_dict(prefix="final."), "cond_embed.0.weight"}

    net = tiny()
    apply("head", net, NEW_SLOT, bias=False)
    assert trainable(net) == {"final.modulation.1.weight", "final.linear.weight",
                              "cond_embed.0.parametrizations.weight.0.delta"}
    with pytest.raises(ValueError, match=r"strategy head: unknown argument 'k' \(arguments: bias\)"):
        apply("head", tiny(), NEW_SLOT, k=1)


@torch.no_grad()
def test_lora_merges_into_plain_weights_with_the_same_outputs():
    net = tiny()
    apply("lora", net, NEW_SLOT, r=4, alpha=8)
    for name, p in net.named_parameters():  # a trained adapter: B (zero at init) and the slot delta move
        if "lora_B" in name or name.endswith("delta"):
            p.normal_(0, 0.05)
    x, label, cond = inputs(slot=2)
    adapted = net(x, label, cond)
    Adaptation.fold(net)
    assert not any("lora" in n or "parametrizations" in n for n in net.state_dict())
    assert set(net.state_dict()) == set(tiny().state_dict())
    assert all(type(m) is nn.Linear for m in net.blocks.modules() if isinstance(m, nn.Linear))
    torch.testing.assert_close(net(x, label, cond), adapted, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(tiny()(x, label, cond), adapted, atol=1e-3)  # the adapter did change the output


@torch.no_grad()
@pytest.mark.parametrize("strategy", ["slot", "bitfit", "lora"])
def test_new_slot_column_trains_while_known_columns_stay_bit_exact(strategy):
    net, base = tiny(), tiny()
    apply(strategy, net, NEW_SLOT)
    delta = next(p for n, p in net.named_parameters() if n.endswith("delta"))
    delta.normal_(0, 0.5)
    Adaptation.fold(net)
    w_new, w_old = net.cond_embed[0].weight, base.cond_embed[0].weight
    assert torch.equal(w_new[:, :NEW_SLOT], w_old[:, :NEW_SLOT])
    assert not torch.equal(w_new[:, NEW_SLOT], w_old[:, NEW_SLOT])
    if strategy == "slot":  # nothing else moved: a known detector's output is bit-identical
        assert torch.equal(net(*inputs(slot=0)), base(*inputs(slot=0)))
        assert not torch.equal(net(*inputs(slot=2)), base(*inputs(slot=2)))


def test_mean_and_standard_error_over_seeds():
    assert mean_error([(1.0, 0.1), (3.0, 0.2)]) == {"value": 2.0, "error": pytest.approx(1.0)}
    assert mean_error([(1.5, 0.1)]) == {"value": 1.5, "error": 0.1}
    assert mean_error([(1.5, 0.1), (None, None)]) == {"value": None, "error": None}
    cells = [{"label": label, "strategy": label, "size": 100, "seed": s, "percent": 100.0, "trainable": 10,
              "gm": [gm, 0.01], "auc": [0.6, 0.01], "fpd": [0.1, 0.01]}
             for label, gms in (("scratch", (0.20, 0.16)), ("full", (0.09, 0.09))) for s, gm in enumerate(gms)]
    summary = summarise(cells)
    assert summary["rows"]["scratch"]["sizes"]["100"]["gm"]["value"] == pytest.approx(0.18)
    assert summary["gain_over_scratch"]["full"]["100"] == pytest.approx(50.0)


# --- end to end on toy showers (the `toys` runs of conftest) ---------------------------------

def adapt(toys, strategy, out, *extra):
    return main(["adapt", "--from", str(toys / "base"), "--data", str(toys / "c.h5"), "--strategy", strategy,
                 "--steps", "10", "--batch-size", "16", "--device", "cpu", "--out", str(toys / out),
                 "--no-progress", *extra])


def generated(model, detector, n=4):
    e = np.full(n, 5e3)
    return np.concatenate(list(model.generate(e, np.full(n, np.pi / 2), np.zeros(n), detector, steps=4, seed=7)))


def test_adapting_in_the_free_slot_keeps_pretraining_detectors_bit_identical(toys, one_thread):
    assert adapt(toys, "slot", "slot") == 0
    base, adapted = load_model(toys / "base"), load_model(toys / "slot")
    assert adapted.conditions.detectors == ["a", "b", "c"]  # the new detector took the free slot
    assert adapted.describe["adapted"]["strategy"] == "slot"
    assert adapted.describe["adapted"]["trainable"] == TINY["dim"] // 2
    for known in ("a", "b"):
        assert np.array_equal(generated(base, known), generated(adapted, known))
    assert np.isfinite(generated(adapted, "c")).all()


def test_lora_adaptation_saves_a_plain_model_and_reinit_scales_its_learning_rate(toys, one_thread):
    assert adapt(toys, "lora", "lora", "--arg", "r=2", "--arg", "alpha=4") == 0
    weights, describe = load_checkpoint(toys / "lora" / "model.safetensors")
    assert not any("lora" in k for k in weights) and describe["adapted"]["args"] == {"r": 2, "alpha": 4}
    assert load_model(toys / "lora").conditions.detectors == ["a", "b", "c"]
    assert adapt(toys, "reinit", "reinit", "--arg", "lr_mult=3") == 0
    _, info = load_checkpoint(toys / "reinit" / "checkpoint.safetensors")
    lrs = sorted(g["lr"] for g in info["optimizer"]["param_groups"])
    assert lrs[1] == pytest.approx(3 * lrs[0])


def test_redistillation_starts_the_student_from_the_pretrained_cd(toys, one_thread):
    assert adapt(toys, "full", "full", "--distil", str(toys / "base_cd"), "--distil-steps", "2") == 0
    student = load_model(toys / "full" / "fast")
    assert student.describe["process"] == "consistency" and student.conditions.detectors == ["a", "b", "c"]
    config = from_dict(RunConfig, {"out": str(toys / "x"), "process": {
        "name": "cd", "teacher": str(toys / "full"), "student": str(toys / "base_cd")}})
    built = assemble(config)
    pretrained = load_model(toys / "base_cd").process.net.state_dict()
    for key, value in built.process.student.net.state_dict().items():
        assert torch.equal(value, pretrained[key])
    teacher = built.process.teacher.net.state_dict()
    assert not all(torch.equal(v, teacher[k]) for k, v in pretrained.items())


def test_adaptation_errors_name_the_problem(toys, tmp_path, capsys, tiny_run_config, one_thread):
    full = tiny_run_config(tmp_path, "full_slots", {"a": str(toys / "a.h5")}, 2, free_slots=0)
    assert main(["train", "--config", str(full), "--no-progress"]) == 0
    code = main(["adapt", "--from", str(tmp_path / "full_slots"), "--data", str(toys / "c.h5"),
                 "--steps", "1", "--out", str(tmp_path / "x"), "--no-progress"])
    assert code == 2 and "no free detector slot for 'c'" in capsys.readouterr().err
    ds3 = calochallenge_binning("dataset_3")
    write_showers(tmp_path / "d3.h5", toy_showers(ds3, 4, seed=0), "calochallenge", ds3, {"detector": "d3"})
    code = main(["adapt", "--from", str(toys / "base"), "--data", str(tmp_path / "d3.h5"), "--steps", "1",
                 "--out", str(tmp_path / "y"), "--no-progress"])
    assert code == 2 and "gives model shape (18, 50, 45), the base model's is (9, 16, 45)" in capsys.readouterr().err
    code = main(["adapt", "--from", str(toys / "base"), "--data", str(toys / "c.h5"), "--strategy", "lora",
                 "--arg", "rank=3", "--steps", "1", "--out", str(tmp_path / "z"), "--no-progress"])
    assert code == 2 and "unknown argument 'rank'" in capsys.readouterr().err


def test_study_writes_the_table_and_does_not_rerun_finished_cells(toys, monkeypatch, one_thread):
    config = {"out": str(toys / "study"), "base": str(toys / "base"),
              "target": {"name": "c", "train": str(toys / "c.h5"), "test": str(toys / "c_test.h5")},
              "strategies": {"scratch": {}, "lora-r2": {"strategy": "lora", "args": {"r": 2, "alpha": 2}}},
              "sizes": [20, 40], "seeds": [0, 1],
              "train": {"steps": 8, "batch_size": 16, "device": "cpu", "log_every": 4},
              "evaluate": {"n": 200, "steps": 4, "classifier_epochs": 2}}
    path = toys / "study.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    assert main(["study", "--config", str(path), "--no-progress"]) == 0
    summary = json.loads((toys / "study" / "metrics.json").read_text())
    assert summary["sizes"] == [20, 40] and list(summary["rows"]) == ["scratch", "lora-r2"]
    cell = summary["rows"]["lora-r2"]["sizes"]["20"]
    assert cell["seeds"] == 2 and cell["gm"]["value"] > 0 and cell["gm"]["error"] > 0
    assert 0 < summary["rows"]["lora-r2"]["percent"] < 100 and summary["rows"]["scratch"]["percent"] == 100
    assert set(summary["gain_over_scratch"]) == {"lora-r2"}
    assert {r["n_train"] for r in summary["cells"]} == {20, 40}
    assert summary["floor"]["gm"][0] > 0  # Geant4 vs Geant4 from the test file's halves
    report = (toys / "study" / "report.md").read_text()
    assert "| lora-r2 |" in report and "Gain over scratch" in report and "Geant4 vs Geant4" in report
    assert all((toys / "study" / f"study_{k}.png").stat().st_size > 1000 for k in ("gm", "auc", "fpd"))
    # a finished study is not retrained: every cell reads its result.json
    monkeypatch.setattr(study_module, "fit", lambda *a, **k: pytest.fail("a finished cell was retrained"))
    assert main(["study", "--config", str(path), "--no-progress"]) == 0


def test_study_config_errors_name_the_key(toys, tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"out": "x", "base": "y", "target": {"name": "c", "train": "a", "test": "b"},
                                    "strategies": {"fancy": {}}, "sizes": [10]}))
    assert main(["study", "--config", str(path)]) == 2
    assert "bad.yaml: strategies.fancy: unknown strategy 'fancy'" in capsys.readouterr().err
