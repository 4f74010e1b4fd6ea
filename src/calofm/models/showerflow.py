"""ShowerFlow (CaloClouds II transfer study, section 4.2): a conditional normalising flow for the number of points in
each layer of a point-cloud shower given the incident particle.

A zuko neural spline flow (monotonic rational-quadratic splines of ``bins`` bins, ``transforms``
coupling blocks) over the L layer counts, each divided by the fixed 800 of the CaloClouds II transfer study
(:class:`calofm.data.points.LayerCountTransform`), conditioned on the condition vector.
:class:`calofm.generative.Likelihood` trains it (``log_prob``) and samples it (``from_noise``).

Layer extension (CaloClouds II transfer study, section 4.2): a flow pre-trained on L layers serves a target of L + M
layers by modelling the M extra layers as log-normal, each with its own location and scale fitted
on the target's training showers, and then learned with the rest; the location also moves
linearly with the condition (from zero), because the deepest layers' counts grow with the energy.
"""

from __future__ import annotations

import torch
import zuko
from torch import nn

from calofm.models.init import reset_parameters


class LogNormalLayers(nn.Module):
    """Independent log-normal layers: log y ~ N(loc + W cond, exp(log_scale)^2), W starting at zero;
    ``reset_parameters`` returns to the fitted start (``fit``)."""

    def __init__(self, n_cond: int, n_layers: int):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(n_layers))
        self.log_scale = nn.Parameter(torch.zeros(n_layers))
        self.shift = nn.Linear(n_cond, n_layers, bias=False)
        self.register_buffer("start", torch.zeros(2, n_layers))  # fitted (loc, log_scale)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.loc.copy_(self.start[0])
        self.log_scale.copy_(self.start[1])
        nn.init.zeros_(self.shift.weight)

    @torch.no_grad()
    def fit(self, y: torch.Tensor) -> None:
        """Start from the log-normal fit of the positive values ``y`` (N, n_layers)."""
        logs = torch.log(y.to(torch.float64))
        self.start.copy_(torch.stack([logs.mean(0), logs.std(0).clamp(min=1e-3).log()]))
        self.reset_parameters()

    def _normal(self, cond: torch.Tensor) -> torch.distributions.Normal:
        return torch.distributions.Normal(self.loc + self.shift(cond), self.log_scale.exp())

    def log_prob(self, y: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        log_y = torch.log(y)
        return (self._normal(cond).log_prob(log_y) - log_y).sum(-1)  # - log y: the Jacobian of exp

    def from_noise(self, noise: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        normal = self._normal(cond)
        return torch.exp(normal.loc + normal.scale * noise)


class ShowerFlow(nn.Module):
    """p(N_1 / 800, ..., N_L / 800 | cond): the CaloClouds II transfer study's 2 blocks of 8-bin splines (table 5), over
    ``n_layers`` layers, plus ``extra`` log-normal layers after them (layer extension)."""

    REPRESENTATION = "layer_counts"
    TRAINED_WITH = "likelihood"

    def __init__(self, n_cond: int, n_layers: int, extra: int = 0, transforms: int = 2, bins: int = 8,
                 hidden: tuple[int, ...] = (368, 368)):
        super().__init__()
        self.n_layers, self.extra = int(n_layers), int(extra)
        self.flow = zuko.flows.NSF(self.n_layers, n_cond, bins=bins, transforms=transforms,
                                   hidden_features=tuple(hidden), passes=2)  # passes=2: coupling
        self.extension = LogNormalLayers(n_cond, self.extra) if self.extra else None

    @staticmethod
    def geometry_args(readout, args: dict) -> dict:
        """Constructor arguments for ``readout``: its layers, of which those beyond a base flow's
        ``n_layers`` (an adaptation's) are extra."""
        total = len(readout.z_edges) - 1
        n_layers = int(args.get("n_layers", total))
        if total < n_layers:
            raise ValueError(f"the readout has {total} layers, fewer than the flow's {n_layers}; ShowerFlow "
                             "can add layers (the CaloClouds II transfer study's extension) but not drop them")
        return {**args, "n_layers": n_layers, "extra": total - n_layers}

    @staticmethod
    def transfer_args(base_args: dict, model_args: dict) -> dict:
        """A base flow's arguments for a target of another geometry (extended by ``geometry_args``)."""
        if model_args:
            raise ValueError(f"adapt.model: ShowerFlow takes no geometry arguments, got {sorted(model_args)}")
        if base_args.get("extra"):
            raise ValueError("the base flow is already extended; adapt from a flow without extra layers")
        return {k: v for k, v in base_args.items() if k not in ("n_cond", "extra")}

    @torch.no_grad()
    def load_transferable(self, base: ShowerFlow, x: torch.Tensor) -> list[str]:
        """The base flow's weights, and the extra layers' log-normal fits on the target's training
        rows ``x``; returns the names of the parameters that start afresh."""
        self.flow.load_state_dict(base.flow.state_dict())
        if not self.extra:
            return []
        self.extension.fit(x[:, self.n_layers:])
        return [f"extension.{name}" for name, _ in self.extension.named_parameters()]

    @torch.no_grad()
    def init_weights(self, module: nn.Module) -> None:
        """(Re-)initialise ``module``: Xavier weights and zero biases (identity-like splines); the
        extra layers return to their fits."""
        reset_parameters(module)

    def log_prob(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        lp = self.flow(cond).log_prob(x[:, :self.n_layers])
        return lp if self.extension is None else lp + self.extension.log_prob(x[:, self.n_layers:], cond)

    def from_noise(self, noise: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The sample that standard normal ``noise`` (N, layers) maps to."""
        x = self.flow(cond).transform.inv(noise[:, :self.n_layers])
        if self.extension is None:
            return x
        return torch.cat([x, self.extension.from_noise(noise[:, self.n_layers:], cond)], dim=1)
