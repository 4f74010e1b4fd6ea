"""One training loop for every model family.

The loop knows a :class:`~calofm.generative.Process` (whose forward is the loss) and tensors
(x, cond); it owns the optimiser (AdamW), the warmup-stable-decay schedule, the EMA, bf16
autocast, torch.compile, DDP, checkpoints, logs and periodic validation.

Reproducibility: the data order of step s comes from (seed, epoch) and the noise of step s from
(seed, s, rank) alone, so a run killed and resumed from its last checkpoint continues with the
same batches and the same loss curve as one that was never interrupted.

Run folder: ``checkpoint.safetensors`` (+ .json) the full state; ``model.safetensors`` (+ .json)
the generation model (EMA weights); ``metrics.csv``, ``validation.csv``; ``tensorboard/`` when
TensorBoard is installed.
"""

from __future__ import annotations

import copy
import csv
import os
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from calofm.core.errors import CalofmWarning, InputError
from calofm.train import checkpoint
from calofm.train.config import TrainConfig
from calofm.train.schedule import ema_decay, ema_update, wsd

CHECKPOINT, MODEL = "checkpoint.safetensors", "model.safetensors"
# settings that may change between a run and its resumption without changing its course
RESUMABLE_CHANGES = {"device", "compile", "checkpoint_every", "log_every", "validate_every", "validate_showers"}
DESCRIBE_INFORMATION = ("particles",)  # recorded in the description, no part of what trains: resuming ignores it


def _training_part(describe: dict) -> dict:
    """The description without DESCRIBE_INFORMATION: runs saved before such a key existed still resume."""
    return {k: v for k, v in describe.items() if k not in DESCRIBE_INFORMATION}


Validate = Callable[[torch.nn.Module, int], dict]
_said = {"tensorboard": False}


def resolve_device(name: str, rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{rank % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(name, "CUDA device requested but torch sees no GPU")
    return device


def init_distributed() -> tuple[int, int]:
    """(rank, world size); joins the torchrun process group when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


class CsvLog:
    """Append-only CSV whose rows after a resumed step are dropped first."""

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        if path.exists():
            with path.open() as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
            self._rewrite(rows)

    def _rewrite(self, rows: list[dict]) -> None:
        with self.path.open("w", newline="") as f:
            if rows:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)

    def append(self, row: dict) -> None:
        new = not self.path.exists() or self.path.stat().st_size == 0
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)


class Batches:
    """Global batch ``step`` as indices into N showers: epochs are seeded permutations, chained."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        if batch_size % world:
            raise ValueError(f"batch size {batch_size} is not divisible by {world} processes")
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self._epoch, self._perm = -1, None

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return self._perm

    def __call__(self, step: int) -> np.ndarray:
        out, start = [], step * self.batch_size
        while sum(map(len, out)) < self.batch_size:
            epoch, offset = divmod(start, self.n)
            take = min(self.batch_size - sum(map(len, out)), self.n - offset)
            out.append(self._permutation(epoch)[offset:offset + take])
            start += take
        local = self.batch_size // self.world
        return np.concatenate(out)[self.rank * local:(self.rank + 1) * local]


def step_seed(seed: int, step: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)


class Trainer:
    """Train ``process`` on (x, cond) with ``settings``, writing to the run folder ``out``.

    Each step's global batch is cut into ``world x accumulate`` equal chunks, in order: process r
    takes chunks r * accumulate ... (r + 1) * accumulate - 1, and chunk g draws its noise from
    (seed, step, g). So W processes under torchrun train exactly as one process with ``accumulate``
    W (the same chunks, the same noise, the mean of the chunk gradients), up to rounding.

    ``describe`` is the JSON description stored with the generation model (what a loader needs
    to rebuild it); ``validate(sampler, step)`` returns metrics for validation.csv. ``lr_scale``
    maps parameter names to learning-rate multipliers (default 1); ``fold(process)`` turns a copy
    of the trained process into the generation model's layout (e.g. merges adapters), in place.
    """

    def __init__(self, process, x: torch.Tensor, cond: torch.Tensor, settings: TrainConfig, out: str | Path,
                 describe: dict, validate: Validate | None = None, progress: bool = True,
                 log: Callable[[str], None] = print, lr_scale: dict[str, float] | None = None,
                 fold: Callable[[torch.nn.Module], None] | None = None):
        self.rank, self.world = init_distributed()
        self.device = resolve_device(settings.device, self.rank)
        self.process, self.x, self.cond, self.settings = process.to(self.device), x, cond, settings
        self.out, self.describe, self.validate = Path(out), describe, validate
        self.main = self.rank == 0
        self.progress, self.log = progress and self.main, (log if self.main else lambda _: None)
        self.trainable = {n: p for n, p in process.named_parameters() if p.requires_grad}
        if not self.trainable:
            raise ValueError("the process has no trainable parameters")
        scales = {n: (lr_scale or {}).get(n, 1.0) for n in self.trainable}
        groups = [{"params": [self.trainable[n] for n in scales if scales[n] == scale], "lr_scale": scale}
                  for scale in sorted(set(scales.values()))]
        self.optimizer = torch.optim.AdamW(groups, lr=settings.lr, weight_decay=settings.weight_decay)
        self.fold = fold
        self.ema = {n: p.detach().clone() for n, p in self.trainable.items()} if settings.ema is not None else None
        chunks = self.world * settings.accumulate
        self.batches = Batches(len(x), self._batch_size(len(x), chunks), settings.seed, self.rank, self.world)
        if self.batches.batch_size % chunks:
            raise ValueError(f"train.batch_size {self.batches.batch_size} does not split into {self.world} processes "
                             f"x {settings.accumulate} chunks")

    def _batch_size(self, n: int, chunks: int) -> int:
        """The configured batch, capped at the training rows: a larger one would only repeat them (and
        grow past memory)."""
        size = self.settings.batch_size
        capped = max(n - n % chunks, chunks)
        if size <= capped:
            return size
        if self.main:
            warnings.warn(CalofmWarning(f"train.batch_size {size} is more than the {n} training rows: batches "
                                        f"of {capped}, each an epoch"), stacklevel=3)
        return capped

    # --- state ------------------------------------------------------------------------
    def _settings_dict(self) -> dict:
        return {k: v for k, v in vars(self.settings).items() if k not in RESUMABLE_CHANGES}

    def save_checkpoint(self, step: int) -> None:
        tensors = {f"process.{k}": v for k, v in self.process.state_dict().items()}
        if self.ema is not None:
            tensors.update({f"ema.{k}": v for k, v in self.ema.items()})
        optim_tensors, optim_info = checkpoint.flatten_optimizer(self.optimizer.state_dict())
        tensors.update(optim_tensors)
        checkpoint.save(self.out / CHECKPOINT, tensors,
                        {"step": step, "world": self.world, "settings": self._settings_dict(),
                         "optimizer": optim_info, "describe": self.describe})

    def resume(self) -> int:
        """Load the run folder's checkpoint if there is one; the step to continue from."""
        path = self.out / CHECKPOINT
        if not path.exists():
            return 0
        tensors, info = checkpoint.load(path, self.device)
        if (info["settings"] != self._settings_dict()
                or _training_part(info["describe"]) != _training_part(self.describe)):
            raise InputError(path, "holds a run with other settings or data; use another --out, or delete the "
                                   "folder to start afresh")
        self.process.load_state_dict({k[8:]: v for k, v in tensors.items() if k.startswith("process.")})
        if self.ema is not None:
            self.ema = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
        self.optimizer.load_state_dict(checkpoint.unflatten_optimizer(tensors, info["optimizer"]))
        return int(info["step"])

    @torch.no_grad()
    def sampler(self) -> torch.nn.Module:
        """The generation model with the EMA weights (a copy; training weights are untouched)."""
        process = copy.deepcopy(self.process)
        if self.ema is not None:
            params = dict(process.named_parameters())
            for name, value in self.ema.items():
                params[name].copy_(value)
        if self.fold:
            self.fold(process)
        return process.sampler().eval()

    def save_model(self, step: int) -> None:
        checkpoint.save(self.out / MODEL, self.sampler().state_dict(), {**self.describe, "step": step})

    # --- loop -------------------------------------------------------------------------
    def run(self, stop_at: int | None = None) -> dict:
        """Train to ``settings.steps``, or stop after step ``stop_at`` as a kill would (nothing saved)."""
        s = self.settings
        self.out.mkdir(parents=True, exist_ok=True)
        start = self.resume()
        metrics = CsvLog(self.out / "metrics.csv", start) if self.main else None
        validation = CsvLog(self.out / "validation.csv", start) if self.main else None
        board = self._tensorboard()
        model = self.process
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel
            # an expert whose class a rank's batch lacks gets no gradient there (distillations hold no net)
            routed = getattr(getattr(self.process, "net", None), "ROUTED", False)
            model = DistributedDataParallel(model,
                                            device_ids=[self.device.index] if self.device.type == "cuda" else None,
                                            find_unused_parameters=routed)
        forward = torch.compile(model) if s.compile else model
        end = min(s.steps, stop_at) if stop_at is not None else s.steps
        if start >= s.steps:
            self.log(f"{self.out} has already finished its {s.steps} steps; nothing to do")
        elif start:
            self.log(f"resuming {self.out} at step {start}")
        running, count, t0, last = torch.zeros((), device=self.device), 0, time.perf_counter(), {}
        bar = self._bar(start, end)
        for step in range(start, end):
            factor = wsd(step, s.steps, s.warmup, s.decay)
            for group in self.optimizer.param_groups:
                group["lr"] = s.lr * factor * group["lr_scale"]
            self.optimizer.zero_grad(set_to_none=True)
            loss = torch.zeros((), device=self.device)
            chunks = torch.from_numpy(self.batches(step)).chunk(s.accumulate)
            for c, index in enumerate(chunks):
                xb = self.x[index].to(self.device, non_blocking=True)
                cb = self.cond[index].to(self.device, non_blocking=True)
                seed = step_seed(s.seed, step, self.rank * s.accumulate + c)
                generator = torch.Generator(device=self.device).manual_seed(seed)
                final = c == len(chunks) - 1  # DDP averages the gradients over processes after the last chunk only
                with model.no_sync() if self.world > 1 and not final else nullcontext():
                    with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=s.precision == "bf16"):
                        part = forward(xb, cb, generator) / len(chunks)
                    part.backward()
                loss += part.detach()
            self.optimizer.step()
            self.process.after_step()
            if self.ema is not None:
                ema_update(self.ema, self.trainable, ema_decay(step, s.ema))
            running += loss.float()
            count += 1
            done = step + 1
            if done % s.log_every == 0 or done == s.steps:
                mean = running.item() / count
                if not np.isfinite(mean):
                    raise FloatingPointError(f"loss is {mean} at step {done}; lower train.lr or check the data")
                last = {"step": done, "loss": mean, "lr": s.lr * factor, "seconds": round(time.perf_counter() - t0, 3)}
                if metrics:
                    metrics.append(last)
                if board:
                    board.add_scalar("loss", mean, done)
                    board.add_scalar("lr", s.lr * factor, done)
                running.zero_()
                count = 0
            if bar:
                bar[0].update(bar[1], advance=1,
                              description=f"step {done}/{s.steps} loss {last.get('loss', float('nan')):.4f}")
            if self.main and (done % s.checkpoint_every == 0 or done == s.steps):
                self.save_checkpoint(done)
                self.save_model(done)
            if self.main and self.validate and (done == s.steps or (s.validate_every and done % s.validate_every == 0)):
                row = {"step": done, **self.validate(self.sampler(), done)}
                validation.append(row)
                values = ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "step")
                self.log(f"validation at step {done}: {values}")
        if bar:
            bar[0].stop()
        if board:
            board.close()
        return {"step": end, "loss": last.get("loss"), "seconds": time.perf_counter() - t0}

    def _bar(self, start: int, end: int):
        if not self.progress or start >= end:
            return None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )
        bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        task = bar.add_task(f"step {start}/{self.settings.steps}", total=end, completed=start)
        bar.start()
        return bar, task

    def _tensorboard(self):
        if not self.main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            if not _said["tensorboard"]:  # once per process, not once per run of a study
                self.log("TensorBoard is not installed (pip install tensorboard); logging to metrics.csv only")
                _said["tensorboard"] = True
            return None
        return SummaryWriter(str(self.out / "tensorboard"))
