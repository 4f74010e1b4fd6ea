"""The CaloChallenge classifier test (AUC and JSD of a Geant4-vs-generated classifier).

What this reproduces, and from where (CaloChallenge ``code/evaluate.py`` of the
challenge homepage and its forks; ``code/resnet.py`` for the CNN):

* Labels: **generated = 0, reference (Geant4) = 1**; ``prepare_*_data_for_classifier``
  is called with label 0. for the input file and 1. for the reference file.
* Split (``ttv_split``): each class is cut on its own into train / test / validation by
  ``int(n * fraction)`` (the validation split gets the remainder when the fractions add up
  to one), default 0.6 / 0.2 / 0.2; the two classes are kept balanced (later versions
  truncate the larger class to the size of the smaller one).
* No standardisation of the inputs.
* ``DNN``: Linear(in, H) -> LeakyReLU -> Dropout, then ``num_layer`` = 2 more
  Linear(H, H) -> LeakyReLU -> Dropout, then Linear(H, 1) logits; LeakyReLU slope 0.01
  (torch default); dropout 0 (``--cls_dropout_probability`` default); H = 2048 in the
  challenge's final settings (``--cls_n_hidden``).
* Training: Adam, lr 2e-4, batch 1000, 50 epochs, ``BCEWithLogitsLoss``, train batches
  shuffled every epoch, last partial batch kept.
* Model selection (``train_and_evaluate_cls``): after each epoch the test split is
  evaluated; the epoch with the **highest test accuracy** (first one on ties) is kept,
  and training stops early if the test accuracy reaches 1.
* Calibration (``calibrate_classifier``): ``IsotonicRegression(out_of_bounds="clip",
  y_min=1e-6, y_max=1-1e-6)`` fitted on the sigmoid outputs of the best model on the test
  split, then applied to the validation outputs.
* Scores (``evaluate_cls(final_eval=True)``) on the validation split: AUC =
  ``roc_auc_score`` of the calibrated probabilities; JSD = (log 2 - BCE) / log 2 with BCE
  the mean binary cross-entropy of the calibrated probabilities (so JSD is in units of
  log 2: 0 for indistinguishable samples, 1 for perfectly separable ones; small negative
  values can occur from statistical fluctuations, as in the reference).
* "cnn" classifier (``resnet.py``, from the ``hqucms/CaloChallenge`` fork): a 3D ResNet-18
  (BasicBlock, [2, 2, 2, 2] blocks, widths [32, 64, 64, 128]) over (layers, alpha, r);
  log10 E_inc goes through ``BatchNorm1d(1)`` and is concatenated to the pooled features
  before the final Linear(128 + 1, 1). Its input there is ``[log10 E_inc, 100 * voxels /
  E_inc]`` (see :func:`resnet_inputs`). Its optimiser is AdamW (weight decay 0.01) with
  the learning rate decayed by a factor 0.01 in total over the last 30 % of the epochs.

Deliberate differences from the reference code (its known pain points):

* Split sizes follow the available sample (fractions, not hard-coded event counts); a
  split that would be empty raises a clear :class:`ValueError`.
* The larger class is cut down to the smaller one by a seeded random choice, not by
  taking its first rows (files sorted by energy would otherwise bias the test).
* Everything stays float32 on the host; nothing is converted to float64 except the
  per-event output probabilities; batches are gathered from the caller's arrays and moved
  to the device one at a time (the reference's ``--save_mem`` behaviour, always on), so
  no copy of the full data set is made at all.
* Runs are deterministic for a given seed (seeded split, seeded shuffling, seeded
  initialisation inside :func:`torch.random.fork_rng`, so the caller's global RNG state
  is left alone); ``repeats`` reruns the whole test (new split, new initialisation) with
  seeds ``seed + i`` and reports mean and spread.
* ``select_by="loss"`` is available to pick the best epoch by test-split BCE instead of
  test accuracy (the reference's choice, kept as default so that numbers match).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from calofm.core.errors import CalofmError
from calofm.evaluate.inputs import checked_array, checked_pair

__all__ = [
    "ClassifierInputError",
    "DNN",
    "ResNet3D",
    "low_level_inputs",
    "low_normed_inputs",
    "resnet_inputs",
    "split_sizes",
    "classifier_test",
]

GENERATED_LABEL = 0
REFERENCE_LABEL = 1
_LOG2 = math.log(2.0)
_ISOTONIC_EPS = 1e-6
_FUSED_ADAM = tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 4)


class ClassifierInputError(CalofmError, ValueError):
    """Inputs that cannot be used for the classifier test (too few events, bad shapes...)."""


# --------------------------------------------------------------------------- models


class DNN(nn.Module):
    """Fully connected classifier returning logits (use with ``BCEWithLogitsLoss``).

    ``n_hidden_layers`` counts all hidden layers: the reference's ``--cls_n_layer 2`` is
    ``n_hidden_layers=3`` here (one input layer plus two more).
    """

    def __init__(self, n_inputs: int, hidden: int = 2048, n_hidden_layers: int = 3, dropout: float = 0.0):
        super().__init__()
        if n_inputs < 1 or hidden < 1 or n_hidden_layers < 1:
            raise ValueError("DNN needs n_inputs >= 1, hidden >= 1 and n_hidden_layers >= 1")
        layers: list[nn.Module] = []
        width_in = n_inputs
        for _ in range(n_hidden_layers):
            layers += [nn.Linear(width_in, hidden), nn.LeakyReLU(), nn.Dropout(dropout)]
            width_in = hidden
        layers.append(nn.Linear(hidden, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class _BasicBlock(nn.Module):
    """Two 3x3x3 convolutions with batch norm and an identity (or 1x1x1 projection) skip."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv3d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(c_out)
        self.conv2 = nn.Conv3d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:  # the reference's shortcut type "B"
            self.skip = nn.Sequential(nn.Conv3d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm3d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.skip(x))


class ResNet3D(nn.Module):
    """3D ResNet over (layers, alpha, r) voxel images with E_inc joined before the last layer.

    Follows the CaloChallenge ``resnet.py`` (itself from kenshohara/3D-ResNets-PyTorch):
    stem Conv3d(1, w0, kernel 7, stride 2, padding 3) -> BN -> ReLU -> MaxPool3d(3, 2, 1),
    four stages of ``blocks`` BasicBlocks with ``widths`` channels (strides 1, 2, 2, 2),
    global average pooling, then Linear(widths[-1] + 1, 1) on the pooled features
    concatenated with ``BatchNorm1d(1)(e_inc)``. ``blocks=(2, 2, 2, 2)`` is ResNet-18,
    ``(1, 1, 1, 1)`` ResNet-10. Initialisation as the reference: Kaiming-normal (fan_out)
    convolutions, BN weight 1 / bias 0.

    ``forward(x, e_inc)``: ``x`` is (B, n_voxels) or (B, 1, *shape); ``e_inc`` is (B,) or
    (B, 1), normally log10 of the incident energy. Returns logits (B, 1).
    """

    def __init__(
        self,
        shape: Sequence[int] = (45, 16, 9),
        widths: Sequence[int] = (32, 64, 64, 128),
        blocks: Sequence[int] = (2, 2, 2, 2),
    ):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise ValueError(f"ResNet3D shape must be (n_layers, n_alpha, n_r), got {shape!r}")
        if len(widths) != 4 or len(blocks) != 4:
            raise ValueError("ResNet3D needs four widths and four block counts")
        w0 = int(widths[0])
        self.stem = nn.Sequential(
            nn.Conv3d(1, w0, kernel_size=7, stride=2, padding=3, bias=False),
            nn.BatchNorm3d(w0),
            nn.ReLU(inplace=True),
            nn.MaxPool3d(kernel_size=3, stride=2, padding=1),
        )
        stages: list[nn.Module] = []
        c_in = w0
        for i, (width, n_blocks) in enumerate(zip(widths, blocks)):
            stride = 1 if i == 0 else 2
            stage = [_BasicBlock(c_in, int(width), stride)]
            stage += [_BasicBlock(int(width), int(width)) for _ in range(int(n_blocks) - 1)]
            stages.append(nn.Sequential(*stage))
            c_in = int(width)
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.e_norm = nn.BatchNorm1d(1)
        self.fc = nn.Linear(c_in + 1, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def n_voxels(self) -> int:
        return int(np.prod(self.shape))

    def forward(self, x: torch.Tensor, e_inc: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], 1, *self.shape)
        e = self.e_norm(e_inc.reshape(-1, 1))
        h = self.pool(self.stages(self.stem(x))).flatten(1)
        return self.fc(torch.cat([h, e], dim=1))


# --------------------------------------------------------------------------- inputs


def _showers_and_energy(showers: np.ndarray, e_inc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    showers = np.asarray(showers)
    if showers.ndim != 2:
        raise ClassifierInputError(f"showers must be (N, n_voxels), got shape {showers.shape}")
    e = np.asarray(e_inc, dtype=np.float64).reshape(-1)
    if e.shape[0] != showers.shape[0]:
        raise ClassifierInputError(f"{showers.shape[0]} showers but {e.shape[0]} incident energies")
    if not np.all(e > 0):
        raise ClassifierInputError("incident energies must be positive (log10 is taken)")
    return showers, e


def low_level_inputs(showers: np.ndarray, e_inc: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """``[log10 E_inc, scale * voxels / E_inc]`` as float32, shape (N, 1 + n_voxels).

    ``scale=1`` is the CaloChallenge "cls-low" input as in most versions of the reference
    ``evaluate.py``; one later revision (and the fork that added the ResNet) multiplies the
    voxels by 100 -- pass ``scale=100`` to match it.
    """
    showers, e = _showers_and_energy(showers, e_inc)
    out = np.empty((showers.shape[0], showers.shape[1] + 1), dtype=np.float32)
    out[:, 0] = np.log10(e)
    out[:, 1:] = showers
    out[:, 1:] *= (scale / e).astype(np.float32)[:, None]
    return out


def _as_slices(layer_slices: Sequence[slice | int], n_voxels: int) -> list[slice]:
    if len(layer_slices) == 0:
        raise ClassifierInputError("layer_slices is empty")
    if all(isinstance(s, (int, np.integer)) for s in layer_slices):  # voxel counts per layer
        edges = np.concatenate([[0], np.cumsum(np.asarray(layer_slices, dtype=np.int64))])
        slices = [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]
    elif all(isinstance(s, slice) for s in layer_slices):
        slices = list(layer_slices)  # type: ignore[arg-type]
    else:
        raise ClassifierInputError("layer_slices must be all slices or all voxel counts per layer")
    covered = sum(len(range(*s.indices(n_voxels))) for s in slices)
    if covered != n_voxels:
        raise ClassifierInputError(f"layer_slices cover {covered} voxels, showers have {n_voxels}")
    return slices


def low_normed_inputs(showers: np.ndarray, e_inc: np.ndarray, layer_slices: Sequence[slice | int]) -> np.ndarray:
    """The "cls-low-normed" input: ``[log10 E_inc, voxels / E_layer, log10 E_layer]``, float32.

    As the reference: each voxel is divided by its layer's energy plus 1e-16, the layer
    energies enter as ``log10(E_layer + 1e-8)``, and ``log10 E_inc`` comes first.
    ``layer_slices``: one ``slice`` of voxel columns per layer, or the voxel count of each
    layer (layers contiguous, in order). Shape (N, 1 + n_voxels + n_layers).
    """
    showers, e = _showers_and_energy(showers, e_inc)
    n, n_vox = showers.shape
    slices = _as_slices(layer_slices, n_vox)
    out = np.empty((n, 1 + n_vox + len(slices)), dtype=np.float32)
    out[:, 0] = np.log10(e)
    for k, s in enumerate(slices):
        e_layer = showers[:, s].sum(axis=1, dtype=np.float64)
        cols = np.arange(n_vox)[s] + 1
        out[:, cols] = showers[:, s]
        out[:, cols] /= (e_layer + 1e-16).astype(np.float32)[:, None]
        out[:, 1 + n_vox + k] = np.log10(e_layer + 1e-8)
    return out


def resnet_inputs(showers: np.ndarray, e_inc: np.ndarray, scale: float = 100.0) -> tuple[np.ndarray, np.ndarray]:
    """Inputs of the "cnn" classifier: ``(scale * voxels / E_inc, log10 E_inc)`` as float32.

    The first goes to ``classifier_test(reference, generated, ...)``, the second (shape
    (N, 1)) to ``extra_reference`` / ``extra_generated``. ``scale=100`` as in the ResNet
    version of the reference.
    """
    x = low_level_inputs(showers, e_inc, scale=scale)
    return x[:, 1:], x[:, :1].copy()


# --------------------------------------------------------------------------- splitting


def split_sizes(n_per_class: int, fractions: Sequence[float] = (0.6, 0.2, 0.2)) -> tuple[int, int, int]:
    """Events per class in (train, test, validation), as the reference's ``ttv_split``.

    Each size is ``int(n * fraction)``; when the fractions add up to one the validation
    split also gets the events left over by the rounding. Raises
    :class:`ClassifierInputError` (a ``ValueError``) if a split would be empty.
    """
    if len(fractions) != 3:
        raise ClassifierInputError(f"fractions must be (train, test, validation), got {fractions!r}")
    f = np.asarray(fractions, dtype=np.float64)
    if np.any(f <= 0) or not np.all(np.isfinite(f)) or f.sum() > 1.0 + 1e-9:
        raise ClassifierInputError(f"fractions must be positive and add up to at most 1, got {tuple(fractions)}")
    n_train, n_test = int(n_per_class * f[0]), int(n_per_class * f[1])
    n_val = n_per_class - n_train - n_test if abs(f.sum() - 1.0) < 1e-9 else int(n_per_class * f[2])
    if min(n_train, n_test, n_val) < 1:
        need = int(math.ceil(1.0 / f.min()))
        raise ClassifierInputError(
            f"classifier test: {n_per_class} events per class (the smaller sample) give "
            f"train/test/validation splits of {n_train}/{n_test}/{n_val} with fractions "
            f"{tuple(float(x) for x in f)}; every split needs at least one event per class "
            f"(at least {need} events per class; thousands for a meaningful AUC)"
        )
    return n_train, n_test, n_val


class _Split:
    """Rows of one split: class (0 generated / 1 reference) and row index in that class's array."""

    def __init__(self, gen_rows: np.ndarray, ref_rows: np.ndarray):
        self.cls = np.concatenate([np.zeros(len(gen_rows), np.int8), np.ones(len(ref_rows), np.int8)])
        self.rows = np.concatenate([gen_rows, ref_rows]).astype(np.int64)

    def __len__(self) -> int:
        return len(self.rows)


class _Data:
    """The two samples (never copied) and a per-batch gather into float32 tensors."""

    def __init__(self, generated, reference, extra_generated, extra_reference):
        self.x = (generated, reference)
        self.e = (extra_generated, extra_reference)

    def batch(self, split: _Split, pos: np.ndarray, device: torch.device):
        cls, rows = split.cls[pos], split.rows[pos]
        x = np.empty((len(pos), self.x[0].shape[1]), dtype=np.float32)
        e = None if self.e[0] is None else np.empty((len(pos), self.e[0].shape[1]), dtype=np.float32)
        for c in (0, 1):
            m = cls == c
            if m.any():
                x[m] = self.x[c][rows[m]]
                if e is not None:
                    e[m] = self.e[c][rows[m]]
        to = dict(device=device, non_blocking=True)
        xt = torch.from_numpy(x).to(**to)
        et = None if e is None else torch.from_numpy(e).to(**to)
        yt = torch.from_numpy(cls.astype(np.float32)).to(**to)
        return xt, et, yt


# --------------------------------------------------------------------------- training


def _forward(model: nn.Module, x: torch.Tensor, e: torch.Tensor | None) -> torch.Tensor:
    if isinstance(model, ResNet3D):
        return model(x, e)
    return model(x if e is None else torch.cat([e, x], dim=1))


@torch.inference_mode()
def _logits(model: nn.Module, data: _Data, split: _Split, s: _Settings) -> np.ndarray:
    model.eval()
    out = np.empty(len(split), dtype=np.float64)
    for start in range(0, len(split), s.batch_size):
        pos = np.arange(start, min(start + s.batch_size, len(split)))
        x, e, _ = data.batch(split, pos, s.device)
        with s.autocast():
            out[pos] = _forward(model, x, e).reshape(-1).double().cpu().numpy()
    return out


def _bce_from_logits(logits: np.ndarray, y: np.ndarray) -> float:
    # mean of softplus(-z) for y=1 and softplus(z) for y=0, numerically stable
    z = np.where(y > 0.5, -logits, logits)
    return float(np.mean(np.logaddexp(0.0, z)))


def _bce_from_probs(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def _checked_extra(extra: Any, name: str, n: int, model: str) -> np.ndarray | None:
    """The extra per-event columns of one sample (log10 E_inc for the cnn) as a 2-D array, or None."""
    if extra is None:
        if model == "cnn":
            raise ClassifierInputError(f"model='cnn' needs extra_{name} (log10 E_inc per event, see resnet_inputs)")
        return None
    extra = checked_array(extra, f"extra_{name}", ndim=(1, 2), dtype=None, error=ClassifierInputError)
    extra = extra.reshape(len(extra), -1)
    if len(extra) != n:
        raise ClassifierInputError(f"extra_{name} must have one row per event ({n}), got shape {extra.shape}")
    if model == "cnn" and extra.shape[1] != 1:
        raise ClassifierInputError(f"extra_{name} for the cnn must be one value per event (log10 E_inc)")
    return extra


def _progress(iterable, enabled: bool, description: str):
    if not enabled:
        return iterable
    from rich.progress import track

    return track(iterable, description=description, transient=True)


@dataclass(frozen=True)
class _Settings:
    """What every run of one classifier test shares."""

    model: str  # "dnn" or "cnn"
    model_kwargs: dict
    n_inputs: int
    sizes: tuple[int, int, int]  # events per class in train / test / validation
    epochs: int
    batch_size: int
    lr: float
    device: torch.device
    select_by: str  # "accuracy" or "loss"
    progress: bool
    precision: str = "float32"  # or "bfloat16": autocast of the forward passes (weights stay float32)

    def autocast(self):
        """The forward passes' precision: float32, or bfloat16 autocast (AMX on CPUs, tensor cores on GPUs)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bfloat16")


@dataclass
class _Best:
    """The epoch kept so far (model selection on the test split)."""

    epoch: int = 0
    accuracy: float = -np.inf
    loss: float = np.inf
    state: dict | None = None


def _splits(n_gen: int, n_ref: int, sizes: tuple[int, int, int], rng: np.random.Generator) -> list[_Split]:
    """Train / test / validation: a random subset of each class (balanced), cut in that order."""
    n_train, n_test, n_val = sizes
    n = n_train + n_test + n_val
    gen_rows = rng.permutation(n_gen)[:n]  # also the balanced random subset of the larger class
    ref_rows = rng.permutation(n_ref)[:n]
    cuts = (0, n_train, n_train + n_test, n)
    return [_Split(gen_rows[a:b], ref_rows[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]


def _build(s: _Settings) -> tuple[nn.Module, torch.optim.Optimizer, LRScheduler | None]:
    """The model (initial weights from torch's global generator), its optimiser and lr schedule (or None)."""
    if s.model == "dnn":
        model = DNN(s.n_inputs, **s.model_kwargs).to(s.device)
        # the fused kernel is the same Adam, 4x faster per step for 3 x 2048 on a CPU (torch >= 2.4 there)
        return model, torch.optim.Adam(model.parameters(), lr=s.lr, fused=_FUSED_ADAM), None
    model = ResNet3D(**s.model_kwargs)
    if model.n_voxels != s.n_inputs:
        raise ClassifierInputError(
            f"cnn shape {model.shape} has {model.n_voxels} voxels, the inputs have {s.n_inputs} columns"
        )
    model.to(s.device)
    # as the ResNet version of the reference: AdamW, lr decayed by 0.01 over the last 30 % of the epochs
    optim = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=0.01)
    n_decay = max(1, int(s.epochs * 0.3))
    sched = torch.optim.lr_scheduler.MultiStepLR(
        optim, milestones=list(range(s.epochs - n_decay, s.epochs)), gamma=0.01 ** (1.0 / n_decay)
    )
    return model, optim, sched


def _train_epoch(
    model: nn.Module, optim: torch.optim.Optimizer, data: _Data, train: _Split, order: np.ndarray, s: _Settings
) -> None:
    """One pass over the training split in the given order, ``s.batch_size`` events per step."""
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    loss_fn = nn.BCEWithLogitsLoss()
    model.train()
    for start in range(0, len(order), s.batch_size):
        pos = order[start : start + s.batch_size]
        if has_bn and len(pos) < 2:
            continue  # batch norm cannot train on a single event
        x, e, y = data.batch(train, pos, s.device)
        with s.autocast():
            logits = _forward(model, x, e).reshape(-1)
        loss = loss_fn(logits.float(), y)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()


def _train(
    model: nn.Module, optim: torch.optim.Optimizer, sched: LRScheduler | None, data: _Data, train: _Split,
    test: _Split, s: _Settings, seed: int, description: str,
) -> tuple[_Best, list[dict]]:
    """Train, scoring the test split after each epoch; keep the best epoch, stop at test accuracy 1."""
    shuffle = torch.Generator().manual_seed(seed)
    y_test = test.cls.astype(np.float64)
    best, history = _Best(), []
    for epoch in _progress(range(s.epochs), s.progress, description):
        _train_epoch(model, optim, data, train, torch.randperm(len(train), generator=shuffle).numpy(), s)
        if sched is not None:
            sched.step()
        z = _logits(model, data, test, s)
        acc, loss = float(np.mean((z > 0) == (y_test > 0.5))), _bce_from_logits(z, y_test)
        history.append({"epoch": epoch + 1, "test_accuracy": acc, "test_loss": loss})
        better = acc > best.accuracy if s.select_by == "accuracy" else loss < best.loss
        if better:
            best = _Best(epoch + 1, acc, loss, {k: v.detach().clone() for k, v in model.state_dict().items()})
        if acc == 1.0:
            break  # perfectly separated: nothing left to learn (as the reference)
    return best, history


def _calibrate(p_test: np.ndarray, y_test: np.ndarray, p_val: np.ndarray) -> np.ndarray:
    """Validation probabilities through the isotonic regression fitted on the test split (as the reference)."""
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(out_of_bounds="clip", y_min=_ISOTONIC_EPS, y_max=1.0 - _ISOTONIC_EPS)
    return iso.fit(p_test, y_test).predict(p_val)


def _scores(model: nn.Module, data: _Data, test: _Split, val: _Split, s: _Settings) -> dict:
    """AUC and JSD (in units of log 2) on the validation split, calibrated and uncalibrated."""
    from scipy.special import expit
    from sklearn.metrics import roc_auc_score

    z_test = _logits(model, data, test, s)
    z_val = _logits(model, data, val, s)
    if not (np.all(np.isfinite(z_test)) and np.all(np.isfinite(z_val))):
        raise FloatingPointError("classifier training diverged: non-finite outputs (try a smaller lr)")
    p_test, p_val = expit(z_test), expit(z_val)
    y_val = val.cls.astype(np.float64)
    p_cal = _calibrate(p_test, test.cls.astype(np.float64), p_val)
    return {
        "auc": float(roc_auc_score(y_val, p_cal)),
        "jsd": (_LOG2 - _bce_from_probs(p_cal, y_val)) / _LOG2,
        "auc_uncalibrated": float(roc_auc_score(y_val, p_val)),
        "jsd_uncalibrated": (_LOG2 - _bce_from_probs(p_val, y_val)) / _LOG2,
    }


def _run_once(data: _Data, s: _Settings, seed: int, description: str) -> dict:
    """One classifier test with one seed: split, build, train, calibrate and score."""
    train, test, val = _splits(len(data.x[0]), len(data.x[1]), s.sizes, np.random.default_rng(seed))
    with torch.random.fork_rng(devices=[s.device] if s.device.type == "cuda" else []):
        torch.manual_seed(seed)
        model, optim, sched = _build(s)
        best, history = _train(model, optim, sched, data, train, test, s, seed, description)
    if best.state is None:
        raise FloatingPointError("classifier training diverged: the test loss is NaN from the first epoch")
    model.load_state_dict(best.state)
    return {
        "seed": seed,
        **_scores(model, data, test, val, s),
        "best_epoch": best.epoch,
        "best_test_accuracy": best.accuracy,
        "best_test_loss": best.loss,
        "epochs_run": len(history),
        "history": history,
        "indices": {  # rows of the caller's arrays in each split, per class
            name: {"generated": split.rows[split.cls == 0], "reference": split.rows[split.cls == 1]}
            for name, split in (("train", train), ("test", test), ("val", val))
        },
    }


def classifier_test(
    reference: np.ndarray,
    generated: np.ndarray,
    model: str = "dnn",
    epochs: int = 50,
    batch_size: int = 1000,
    lr: float = 2e-4,
    seed: int = 0,
    device: str | torch.device = "cpu",
    repeats: int = 1,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    extra_reference: np.ndarray | None = None,
    extra_generated: np.ndarray | None = None,
    *,
    model_kwargs: dict | None = None,
    shape: Sequence[int] | None = None,
    select_by: str = "accuracy",
    progress: bool = False,
    sizes: tuple[int, int, int] | None = None,
    precision: str = "float32",
) -> dict:
    """Train a classifier to tell ``reference`` (label 1) from ``generated`` (label 0).

    ``reference`` / ``generated``: (N, d) feature arrays, e.g. from :func:`low_level_inputs`,
    :func:`low_normed_inputs`, a high-level feature vector, or for ``model="cnn"`` the
    voxel part of :func:`resnet_inputs` (d = n_layers * n_alpha * n_r, reshaped to
    ``shape``) with log10 E_inc in ``extra_*``. For the DNN, ``extra_*`` (if given) are
    prepended to the features. float32 input avoids any conversion; other float dtypes
    are converted batch by batch.

    ``model``: "dnn" (:class:`DNN`) or "cnn" (alias "resnet", :class:`ResNet3D`);
    ``model_kwargs`` go to the constructor (e.g. ``{"hidden": 64}``); ``shape`` is the
    cnn's (n_layers, n_alpha, n_r). ``select_by``: "accuracy" (the reference) or "loss"
    (test-split BCE) for the choice of the best epoch. ``sizes``: events per class in
    (train, test, validation), instead of ``fractions`` of the smaller sample.
    ``precision``: "float32" (default) or "bfloat16" (autocast forward passes: about 6x
    faster on CPUs with AMX and on GPUs; the weights and the optimiser stay float32).

    Returns ``{"auc", "auc_std", "jsd", "jsd_std", "repeats", "best_epochs", "n_train",
    "n_test", "n_val", "n_per_class", "labels", ...}``: means over ``repeats`` runs (seeds
    ``seed + i``, each with its own split and initialisation), the sample standard
    deviation (0.0 for a single run), one dict per run (with uncalibrated scores and the
    per-epoch test history), and the split sizes (``n_*`` count both classes together).
    """
    model_name = {"dnn": "dnn", "cnn": "cnn", "resnet": "cnn"}.get(str(model).lower())
    if model_name is None:
        raise ClassifierInputError(f"model must be 'dnn' or 'cnn', got {model!r}")
    if select_by not in ("accuracy", "loss"):
        raise ClassifierInputError(f"select_by must be 'accuracy' or 'loss', got {select_by!r}")
    if precision not in ("float32", "bfloat16"):
        raise ClassifierInputError(f"precision must be 'float32' or 'bfloat16', got {precision!r}")
    if epochs < 1 or batch_size < 1 or repeats < 1:
        raise ClassifierInputError("epochs, batch_size and repeats must be at least 1")
    reference, generated = checked_pair(reference, generated, min_rows=1, dtype=None, error=ClassifierInputError)
    extra_generated = _checked_extra(extra_generated, "generated", len(generated), model_name)
    extra_reference = _checked_extra(extra_reference, "reference", len(reference), model_name)
    if (extra_generated is None) != (extra_reference is None) or (
        extra_generated is not None and extra_generated.shape[1] != extra_reference.shape[1]
    ):
        raise ClassifierInputError("extra_reference and extra_generated must be given together, same width")

    n_per_class = min(len(reference), len(generated))
    if sizes is None:
        sizes = split_sizes(n_per_class, fractions)
    elif len(sizes := tuple(int(v) for v in sizes)) != 3 or min(sizes) < 1 or sum(sizes) > n_per_class:
        raise ClassifierInputError(f"classifier test: splits of {tuple(sizes)} events per class need at least one "
                                   f"event each and {sum(sizes)} in all; the smaller sample has {n_per_class}")
    kwargs = dict(model_kwargs or {})
    if model_name == "cnn":
        if shape is not None:
            kwargs["shape"] = tuple(shape)
        if "shape" not in kwargs:
            raise ClassifierInputError("model='cnn' needs shape=(n_layers, n_alpha, n_r)")
        n_inputs = reference.shape[1]
    else:
        n_inputs = reference.shape[1] + (0 if extra_reference is None else extra_reference.shape[1])

    settings = _Settings(model_name, kwargs, n_inputs, sizes, epochs, batch_size, lr, torch.device(device),
                         select_by, progress, precision)
    data = _Data(generated, reference, extra_generated, extra_reference)
    runs = [_run_once(data, settings, seed + i, f"classifier ({model_name}) run {i + 1}/{repeats}")
            for i in range(repeats)]
    aucs = np.array([r["auc"] for r in runs])
    jsds = np.array([r["jsd"] for r in runs])
    ddof = 1 if repeats > 1 else 0
    return {
        "auc": float(aucs.mean()),
        "auc_std": float(aucs.std(ddof=ddof)),
        "jsd": float(jsds.mean()),
        "jsd_std": float(jsds.std(ddof=ddof)),
        "repeats": runs,
        "best_epochs": [r["best_epoch"] for r in runs],
        "n_train": 2 * sizes[0],
        "n_test": 2 * sizes[1],
        "n_val": 2 * sizes[2],
        "n_per_class": {"train": sizes[0], "test": sizes[1], "val": sizes[2]},
        "labels": {"generated": GENERATED_LABEL, "reference": REFERENCE_LABEL},
        "model": model_name,
        "select_by": select_by,
        "precision": precision,
    }
