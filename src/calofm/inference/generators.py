"""Generating from a trained model: voxel showers, point clouds or token sequences on the detector's mesh.

:func:`load_model` turns a saved run (:mod:`calofm.train.saved`) into the generator its
representation calls for. A point-cloud run keeps beside its model the ShowerFlow run that gives
the points per layer (``counts.safetensors``) and its occupancy calibration (``calibration.json``,
fitted after training).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from calofm.core.errors import CalofmError, InputError
from calofm.data import ShowerWriter
from calofm.data.calibration import OccupancyCalibration
from calofm.data.datasets import DetectorShowers
from calofm.data.files import GENERATED_BY
from calofm.data.points import LayerCountTransform, PointCloudTransform, count_condition
from calofm.data.showers import PointClouds, Showers
from calofm.data.tokens import Tokeniser
from calofm.geometry import project, readout_from_dict
from calofm.train.run import COUNTS
from calofm.train.saved import SavedModel, read_model

CALIBRATION = "calibration.json"   # a point-cloud run's occupancy calibration, per detector


class TrainedModel(SavedModel):
    """A generator: a saved model's process (sampler) with the transforms and meshes of its description."""

    @property
    def default_steps(self) -> int | None:
        return self.process.hparams.get("steps")

    def readout(self, detector: str):
        """The mesh generated showers of ``detector`` are written on."""
        self.conditions.slot(detector)  # a one-line error listing the known detectors
        readouts = self.describe.get("meshes", self.describe["readouts"])
        if detector not in readouts:  # a model adapted to a new geometry generates in that one only
            raise CalofmError(f"no readout stored for {detector!r} (the model was adapted to another geometry); "
                              f"it generates {', '.join(readouts)} only")
        return readout_from_dict(readouts[detector])

    @torch.no_grad()
    def generate(self, energy: np.ndarray, theta: np.ndarray, phi: np.ndarray, detector: str,
                 steps: int | None = None, batch_size: int = 1000, seed: int = 0, progress: bool = False):
        """Yield the model's output batch by batch for the given conditions: CaloChallenge-order
        voxel rows (MeV), or for a ShowerFlow run the points per layer."""
        self.conditions.slot(detector)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        starts = range(0, len(energy), batch_size)
        if progress:
            from rich.progress import track
            starts = track(starts, description=f"generating {len(energy)} showers")
        for start in starts:
            part = slice(start, start + batch_size)
            yield self._generate_batch(energy[part], theta[part], phi[part], detector, steps, generator)

    def _generate_batch(self, energy, theta, phi, detector: str, steps: int | None, generator) -> np.ndarray:
        cond = self.conditions.forward(energy, theta, phi, self.conditions.slot(detector)).to(self.device)
        noise = torch.randn((len(cond), *self.shape), generator=generator, device=self.device)
        return self._decode(self.process.sample(noise, cond, steps=steps), energy, detector)

    def _decode(self, x: torch.Tensor, energy: np.ndarray, detector: str) -> np.ndarray:
        """The model output of a batch as the generator's output (voxel rows, or points per layer)."""
        return self.voxels.decode(x, energy)

    def sampling(self) -> dict:
        """Sampling settings beyond steps and solver, for the metadata of generated files."""
        return {}

    def write(self, path: str | Path, energy: np.ndarray, theta: np.ndarray, phi: np.ndarray, detector: str,
              steps: int | None = None, batch_size: int = 1000, seed: int = 0, progress: bool = False) -> None:
        """Generate showers for these conditions into a CaloChallenge file (with angles and mesh)."""
        metadata = {"generator": f"{GENERATED_BY} ({self.describe['backbone']} + {self.describe['process']})",
                    "model": str(self.path), "model_step": self.describe.get("step", 0), "detector": detector,
                    "steps": steps or self.default_steps, "seed": seed,
                    **({"particle": self.describe["particles"][detector]}
                       if detector in self.describe.get("particles", {}) else {}),
                    **({"solver": self.process.solver} if hasattr(self.process, "solver") else {}),
                    **self.sampling()}
        with ShowerWriter(path, "calochallenge", self.readout(detector), metadata) as w:
            start = 0
            for rows in self.generate(energy, theta, phi, detector, steps, batch_size, seed, progress):
                part = slice(start, start + len(rows))
                w.append(Showers(energy=energy[part], showers=rows, theta=theta[part], phi=phi[part]))
                start += len(rows)


class CountModel(TrainedModel):
    """A ShowerFlow run: the points per layer of showers, which a PointWise run turns into points."""

    def write(self, path, *args, **kwargs) -> None:
        raise CalofmError(f"{self.path} is a ShowerFlow run: it gives points per layer, not showers; generate "
                          "with a PointWise run trained with it (model.counts)")


POINT_CHUNK = 4096  # points denoised at once: padded point sets of similar size (3x faster than 65536 on CPU)


class PointCloudModel(TrainedModel):
    """A point-cloud run (CaloClouds): its ShowerFlow gives the points per layer, calibrated for the
    occupancy of the readout; the PointWise process generates the points, which are placed in
    layers by depth and projected onto the detector's mesh. The calibration's extra points share
    the energy the uncalibrated count would carry (their energies scaled by N / N_cal): they are
    there to spread the deposits over as many cells as Geant4's, not to add energy (without this,
    the visible energy came out about twice Geant4's at CPU scale)."""

    def __init__(self, describe: dict, process: torch.nn.Module, path: Path):
        super().__init__(describe, process, path)
        counts = Path(path).parent / COUNTS
        self.counts_model = load_model(counts, self.device)
        if self.counts_model.describe != describe["counts"]:
            raise InputError(counts, "is not the ShowerFlow model this run was trained with")
        calibration = Path(path).parent / CALIBRATION
        self.calibrations = {name: OccupancyCalibration(**c) for name, c in
                             (json.loads(calibration.read_text()) if calibration.exists() else {}).items()}

    def _generate_batch(self, energy, theta, phi, detector: str, steps: int | None, generator) -> np.ndarray:
        counts = self.counts_model._generate_batch(energy, theta, phi, detector, None, generator)
        n = counts.sum(1)
        if detector in self.calibrations:
            counts = self.calibrations[detector].apply(counts)
        clouds = self.clouds(energy, theta, phi, detector, counts, steps, generator)
        calibrated = counts.sum(1)  # the extra points share the energy of the N the ShowerFlow gave
        clouds.points[:, 3] *= np.repeat(np.where(calibrated > 0, n / np.maximum(calibrated, 1), 1.0), calibrated)
        return project(self.readout(detector), clouds.points, clouds.offsets)

    @torch.no_grad()
    def clouds(self, energy, theta, phi, detector: str, counts: np.ndarray, steps: int | None,
               generator) -> PointClouds:
        """Generated points (mm, MeV) of showers with ``counts`` (N, L) points per layer: the
        PointWise net's points of each shower, sorted by depth, fill its layers front to back."""
        totals = counts.sum(1)
        cond = torch.cat([self.conditions.forward(energy, theta, phi, self.conditions.slot(detector)),
                          count_condition(totals)], dim=1).to(self.device)
        noise = torch.randn((int(totals.sum()), *self.shape), generator=generator, device=self.device)
        x = self.denoise(noise, cond, totals, steps)
        owners = np.repeat(np.arange(len(counts)), totals)
        order = np.lexsort((x[:, 2].cpu().numpy(), owners))  # by shower, then depth
        layer = np.empty(len(owners), dtype=np.int64)
        layer[order] = np.repeat(np.tile(np.arange(counts.shape[1]), len(counts)), counts.ravel())
        return PointClouds(self.voxels.decode(x, layer), np.concatenate([[0], np.cumsum(totals)]).astype(np.int64))

    def denoise(self, noise: torch.Tensor, cond: torch.Tensor, totals: np.ndarray, steps: int | None) -> torch.Tensor:
        """The points that ``noise`` (M, 4), the rows of showers of ``totals`` points in order, maps to.
        Showers of similar size are padded into point sets (B, P, 4) of at most ``POINT_CHUNK`` points
        that share one context per shower, so the context layers run once per shower, not per point;
        a point's result does not depend on its set (the net treats points independently)."""
        if not len(noise):
            return noise
        offsets = np.concatenate([[0], np.cumsum(totals)])
        order, out, start = np.argsort(totals, kind="stable"), torch.empty_like(noise), 0
        while start < len(order):
            stop = start + 1
            while stop < len(order) and (stop + 1 - start) * totals[order[stop]] <= POINT_CHUNK:
                stop += 1
            group = order[start:stop]
            index = offsets[group][:, None] + np.arange(max(int(totals[group].max()), 1))[None]
            valid = torch.from_numpy(index < offsets[group + 1][:, None]).to(noise.device)
            sets = noise[torch.from_numpy(np.minimum(index, len(noise) - 1)).to(noise.device)]
            x = self.process.sample(sets * valid[..., None], cond[torch.from_numpy(group).to(cond.device)], steps=steps)
            out[torch.from_numpy(index).to(noise.device)[valid]] = x[valid]
            start = stop
        return out

    def fit_calibration(self, detector: DetectorShowers, n_showers: int = 200, seed: int = 0) -> OccupancyCalibration:
        """The CaloClouds II transfer study's occupancy calibration for ``detector``: cells hit against points,
        for its Geant4 showers and for generated ones with the same points per layer."""
        s = detector.showers.take(np.arange(min(n_showers, len(detector.showers))))
        counts = self.voxels.layer_counts(s, detector.readout)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        clouds = self.clouds(s.energy, s.theta, s.phi, detector.name, counts, None, generator)
        generated = project(self.readout(detector.name), clouds.points, clouds.offsets)
        n = counts.sum(1)
        return OccupancyCalibration.fit(n, (s.showers > 0).sum(1), n, (generated > 0).sum(1))


class TokenModel(TrainedModel):
    """A next-token run: sampled token pairs decode to voxels; optionally the next-token foundation model's calibration
    moves the ``deeper = (k, layers)`` most energetic deposits of every shower deeper (off: None)."""

    deeper: tuple[int, int] | None = None

    def _decode(self, tokens: torch.Tensor, energy: np.ndarray, detector: str) -> np.ndarray:
        if self.deeper:
            readout = self.readout(detector)
            if not getattr(readout, "is_regular", False):
                raise CalofmError(f"the depth calibration needs a regular mesh; {detector}'s is {readout.describe()}")
            tokens = self.voxels.deeper(tokens, *self.deeper, readout.n_voxels // readout.n_layers)
        return self.voxels.decode(tokens)

    def sampling(self) -> dict:
        calibration = ({"calibration": f"top-{self.deeper[0]} deposits {self.deeper[1]} layer(s) deeper"}
                       if self.deeper else {})
        return {**self.process.hparams, **calibration}


MODELS = {LayerCountTransform.kind: CountModel, PointCloudTransform.kind: PointCloudModel, Tokeniser.kind: TokenModel}


def trained_model(describe: dict, process: torch.nn.Module, path: Path | None = None) -> TrainedModel:
    """The generator of the kind ``describe``'s representation calls for."""
    return MODELS.get(describe["voxels"].get("kind"), TrainedModel)(describe, process, path)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> TrainedModel:
    """The generator saved in a run folder (or its model.safetensors), or shipped under that name."""
    return trained_model(*read_model(path, device))
