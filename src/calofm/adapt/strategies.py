"""Transfer strategies: which parts of a pre-trained backbone train on a new detector, and how.

A strategy acts on a backbone through its ``ROLES`` (input, noise, condition, blocks, output and,
where the backbone has one, position; see :class:`calofm.models.dit.DiT`) and its
``init_weights(module)``, never through its layout, so every model family gets the same
strategies. A role names one submodule or a list of them (a two-network backbone such as
:class:`calofm.models.vit.CaloDREAM` has a condition embedding in each); ``blocks`` is one
``nn.ModuleList``.

Each strategy is one subclass of :class:`Strategy`, which registers it in ``STRATEGIES`` (name -> class);
the classes below, one per strategy with what it trains as its docstring, are the table of strategies
(``calofm adapt --help`` prints it). They follow the CaloClouds II transfer study (Gaede, Kasieczka,
Valente) section 4.3, CaloDiT-2 (Raikwar et al.) section 5 and CaloDREAM++ (Favaro, Giammanco, Krause)
section 2: scratch, full, bitfit, top-k, lora, condition, slot and reinit.

The additive strategies, expert and particle, are for a backbone with one expert per class (``ROUTED``;
the next-token calorimeter foundation model (mixture of experts + PEFT) section 3,
:class:`calofm.models.NextToken`): they grow it instead of changing its weights, so the pre-trained
classes generate bit-identically (the other strategies do not apply to it).

The new detector slot: a strategy that freezes the condition input layer still trains its
column for the new slot, as a separate delta (a parametrisation), so the frozen columns stay
bit-exact. :meth:`Adaptation.fold` merges deltas and adapters back into plain weights: the
adapted model has the backbone's own layout and inference cost (except for the particle
strategy's routed adapters, which stay separate so that other particles do not run them).
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn
from torch.nn.utils import parametrize

REINIT_LR_MULT = 5.0  # CaloDREAM++: re-initialised layers train at five times the base learning rate
ADAPTER = "particle{}"  # the LoRA adapter of particle (head) i
OPTIONAL_ROLES = ("position",)  # roles a backbone may lack: the strategies then skip them
STRATEGIES: dict[str, type[Strategy]] = {}  # name -> strategy, in the order the classes are defined


@dataclass
class Adaptation:
    """What a strategy did to a backbone: trainable count, learning-rate multipliers, and how to fold."""

    strategy: str
    args: dict
    base_parameters: int                                  # parameters of the backbone as pre-trained
    trainable: int                                        # parameters that train
    lr_scale: dict[str, float] = field(default_factory=dict)  # parameter name -> multiplier (if != 1)
    backbone_args: dict = field(default_factory=dict)     # constructor arguments the strategy changed
    adapter: dict | None = None                           # a routed LoRA adapter it added (see restore)

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / self.base_parameters

    def describe(self) -> dict:
        return {"strategy": self.strategy, "args": self.args, "trainable": self.trainable,
                "base_parameters": self.base_parameters, "percent": round(self.percent, 4)}

    def train_too(self, net: nn.Module, names: list[str], lr_mult: float) -> None:
        """Make the parameters ``names`` of ``net`` (parts a new geometry re-initialised) train under
        this strategy too, at ``lr_mult`` times the learning rate; the counts follow."""
        params = dict(net.named_parameters())
        for name in names:
            module, _, attr = name.rpartition(".")
            if name not in params:  # a weight that now carries the new slot's delta
                name = f"{module}.parametrizations.{attr}.original"
            params[name].requires_grad_(True)
            self.lr_scale[name] = lr_mult
        self.trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)

    @staticmethod
    def fold(net: nn.Module) -> nn.Module:
        """Merge slot deltas and LoRA adapters into plain weights, in place; returns ``net``. ``net``
        may be a deep copy of the training model (the EMA sampler): its parametrized modules share
        their class with the originals', and torch removes a parametrization from the class, so each
        gets a class of its own first."""
        for module in list(net.modules()):
            if parametrize.is_parametrized(module, "weight"):
                cls = type(module)
                own = {k: v for k, v in vars(cls).items() if k not in ("__dict__", "__weakref__")}
                module.__class__ = type(cls.__name__, cls.__bases__, own)
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        routed = {a for m in net.modules() for a in getattr(m, "lora_routes", {}).values()}  # particle adapters stay
        for name, module in list(net.named_modules()):
            if _is_lora(module) and not routed & set(module.lora_A):
                module.merge()
                parent, _, child = name.rpartition(".")
                setattr(net.get_submodule(parent) if parent else net, child, module.get_base_layer())
        return net


class Strategy:
    """A transfer strategy. Each subclass is one, registered in ``STRATEGIES`` under its ``name``; the first
    paragraph of its docstring says what trains. :func:`apply` freezes the backbone, then calls
    ``prepare(net, **args)`` with the strategy's arguments (defaults filled in), which makes what trains
    trainable; with ``slot_delta``, the new slot's column of the frozen condition input then trains too.

    Default learning rates: CaloDiT-2 (Raikwar et al.) trains from scratch at 1e-3 and adapts at 1e-4;
    after the CaloClouds II transfer study (Gaede, Kasieczka, Valente) table 4, BitFit takes 4x and LoRA
    2x the full fine-tuning rate.
    """

    name: ClassVar[str]
    lr: ClassVar[float]                   # the learning rate when a run gives none
    args: ClassVar[dict] = {}             # argument -> default
    additive: ClassVar[bool] = False      # grows a routed backbone by a class (the others change weights)
    slot_delta: ClassVar[bool] = False    # freezes the condition input: the new slot's column trains as a delta

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        STRATEGIES[cls.name] = cls

    def __init__(self, slot_column: int, classes: dict[str, int]):
        self.slot_column = slot_column  # the new detector's one-hot entry in the condition vector
        self.classes = classes          # the class (slot) of each detector the model knows

    @classmethod
    def summary(cls) -> str:
        """The first paragraph of the docstring, on one line."""
        return " ".join(inspect.getdoc(cls).split("\n\n")[0].split())

    def prepare(self, net: nn.Module, **args) -> dict | None:
        """Make the parameters of ``net`` (all frozen) that train trainable, changing ``net`` in place as
        the strategy needs; returns the further fields of the :class:`Adaptation` (lr_scale,
        backbone_args, adapter), if any. By default nothing trains but the new slot's delta."""


class Scratch(Strategy):
    """fresh weights, everything trains (the baseline)"""

    name, lr = "scratch", 1e-3

    def prepare(self, net):
        net.requires_grad_(True)
        net.init_weights(net)


class Full(Strategy):
    """everything trains from the pre-trained weights"""

    name, lr = "full", 1e-4

    def prepare(self, net):
        net.requires_grad_(True)


class BitFit(Strategy):
    """biases only (+ the new detector slot)"""

    name, lr, slot_delta = "bitfit", 4e-4, True

    def prepare(self, net):
        for name, p in net.named_parameters():
            p.requires_grad_(name.endswith("bias"))


class TopK(Strategy):
    """the last k blocks and the noise and condition embeddings"""

    name, lr, args = "top-k", 1e-4, {"k": 2}

    def prepare(self, net, k):
        blocks = role(net, "blocks")
        if not 1 <= k <= len(blocks):
            raise ValueError(f"strategy top-k: k must be in 1..{len(blocks)}, got {k}")
        for module in [*blocks[len(blocks) - k:], *parts(net, "noise"), *parts(net, "condition")]:
            module.requires_grad_(True)


class LoRA(Strategy):
    """low-rank adapters (peft) on the blocks' linear layers (+ the new detector slot), merged into the
    weights after training

    Rank ``r``, scale ``alpha / r``; only the adapters train.
    """

    name, lr, args, slot_delta = "lora", 2e-4, {"r": 8, "alpha": 8}, True

    def prepare(self, net, r, alpha):
        from peft import LoraConfig, inject_adapter_in_model

        prefix = paths(net, "blocks")[0]
        targets = [f"{prefix}.{n}" for n, m in role(net, "blocks").named_modules() if isinstance(m, nn.Linear)]
        inject_adapter_in_model(LoraConfig(r=int(r), lora_alpha=alpha, target_modules=targets, lora_dropout=0.0), net)


class Condition(Strategy):
    """the condition embedding only"""

    name, lr = "condition", 1e-3

    def prepare(self, net):
        for module in parts(net, "condition"):
            module.requires_grad_(True)


class Slot(Strategy):
    """only the new detector slot's column of the first condition layer, every other weight frozen, so that
    pre-training detectors generate bit-identically"""

    name, lr, slot_delta = "slot", 1e-3, True


class Reinit(Strategy):
    """input, output and position parts re-initialised and trained at lr_mult times the learning rate,
    everything else from the pre-trained weights"""

    name, lr, args = "reinit", 1e-4, {"lr_mult": REINIT_LR_MULT}

    def prepare(self, net, lr_mult):
        net.requires_grad_(True)
        prefixes = tuple(p + "." for name in ("input", "output", "position") for p in paths(net, name))
        for name in ("input", "output", "position"):
            for part in parts(net, name):
                net.init_weights(part)
        return {"lr_scale": {n: float(lr_mult) for n, _ in net.named_parameters() if n.startswith(prefixes)}}


class Expert(Strategy):
    """for a new material, a new class whose experts start from those of the detector init and are all that
    trains (+ the new detector slot)

    It shares ``init``'s particle heads and adapters.
    """

    name, lr, args, additive, slot_delta = "expert", 5e-4, {"init": None}, True, True

    def prepare(self, net, init):
        self.grow(net, init)
        return {"backbone_args": net.architecture()}

    def grow(self, net: nn.Module, init: str, new_particle: bool = False) -> int:
        """Add the new detector's class to ``net``, its experts copied from the detector ``init``'s and
        trainable; returns the class."""
        if init not in self.classes:
            raise ValueError(f"strategy {self.name}: init must name the detector whose expert the new one starts "
                             f"from; known: {', '.join(self.classes)}")
        slot = self.slot_column - net.expert_column
        if slot < net.n_experts:
            raise ValueError(f"strategy {self.name}: the detector is already class {slot} of the model; an additive "
                             "strategy adds a new one")
        if slot != net.n_experts:
            raise ValueError(f"strategy {self.name}: the new detector's slot {slot} is not the next class "
                             f"({net.n_experts}); adapt from the run that knows every earlier detector")
        new = net.add_class(self.classes[init], new_particle=new_particle)
        for expert in net.experts_of(new):
            expert.requires_grad_(True)
        return new


class Particle(Expert):
    """for a new particle, as expert plus new particle heads (copies of init's) and a LoRA adapter on the
    attention that only this particle's classes run

    The adapter (peft, rank ``r``, scale ``alpha``) is on every attention projection (q, k, v, out) and
    is not merged.
    """

    name, args = "particle", {"init": None, "r": 8, "alpha": 8}

    def prepare(self, net, init, r, alpha):
        new = self.grow(net, init, new_particle=True)
        head = int(net.head_of_class[new])
        net.spatial_heads[head].requires_grad_(True)
        net.energy_heads[head].requires_grad_(True)
        adapter = {"name": ADAPTER.format(head), "head": head, "r": int(r), "alpha": float(alpha)}
        restore(net, [adapter])
        for name, p in net.named_parameters():
            if f".{adapter['name']}." in name:
                p.requires_grad_(True)
        return {"backbone_args": net.architecture(), "adapter": adapter}


class SlotDelta(nn.Module):
    """weight + delta in one column: the only trainable part of a frozen condition input layer."""

    def __init__(self, out_features: int, column: int):
        super().__init__()
        self.column = column
        self.delta = nn.Parameter(torch.zeros(out_features))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.index_add(1, torch.tensor([self.column], device=weight.device), self.delta[:, None])


def paths(net: nn.Module, name: str) -> list[str]:
    """The submodule paths of ``net`` that play ``name`` (one of its ``ROLES``); [] for an optional
    role (``position``) the backbone lacks."""
    roles = getattr(type(net), "ROLES", None)
    if roles is None or (name not in roles and name not in OPTIONAL_ROLES):
        raise TypeError(f"{type(net).__name__} does not declare the role {name!r} (ROLES: {roles})")
    value = roles.get(name, [])
    return [value] if isinstance(value, str) else list(value)


def parts(net: nn.Module, name: str) -> list[nn.Module]:
    """The submodules of ``net`` that play ``name``."""
    return [net.get_submodule(path) for path in paths(net, name)]


def role(net: nn.Module, name: str) -> nn.Module:
    """The one submodule that plays ``name`` (``blocks``: an ``nn.ModuleList``)."""
    found = parts(net, name)
    if len(found) != 1:
        raise TypeError(f"{type(net).__name__}'s role {name!r} must be one submodule, got {paths(net, name)}")
    return found[0]


def condition_inputs(net: nn.Module) -> list[nn.Linear]:
    """The first linear layer of each condition part: the ones that read the detector one-hot."""
    layers = []
    for part in parts(net, "condition"):
        layers.append(next((m for m in part.modules() if isinstance(m, nn.Linear)), None))
        if layers[-1] is None:
            raise TypeError(f"{type(net).__name__}'s condition role has a part without a linear layer")
    return layers


def apply(strategy: str, net: nn.Module, slot_column: int, classes: dict[str, int] | None = None,
          **args) -> Adaptation:
    """Prepare ``net`` (in place) for adaptation with ``strategy``; ``slot_column`` is the index in
    the condition vector of the new detector's one-hot entry, ``classes`` the class (slot) of each
    detector the model knows (for ``init``). Unknown names or arguments raise."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
    cls = STRATEGIES[strategy]
    if getattr(type(net), "ROUTED", False) != cls.additive:
        additive = " or ".join(name for name, s in STRATEGIES.items() if s.additive)
        raise ValueError(f"strategy {strategy}: " + (f"a {type(net).__name__} grows by classes; adapt it with "
                                                     f"{additive}" if not cls.additive else
                                                     f"{type(net).__name__} has no experts to add"))
    unknown = sorted(set(args) - set(cls.args))
    if unknown:
        raise ValueError(f"strategy {strategy}: unknown argument {unknown[0]!r} (arguments: "
                         f"{', '.join(cls.args) or 'none'})")
    args = {**cls.args, **args}
    base = sum(p.numel() for p in net.parameters())
    net.requires_grad_(False)
    fields = cls(slot_column, classes or {}).prepare(net, **args) or {}
    if cls.slot_delta:  # a frozen condition input: train the new slot's column
        for layer in condition_inputs(net):
            if not 0 <= slot_column < layer.in_features:
                raise ValueError(f"slot column {slot_column} outside the condition input ({layer.in_features})")
            parametrize.register_parametrization(layer, "weight", SlotDelta(layer.out_features, slot_column))
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    return Adaptation(strategy, args, base, trainable, **fields)


def restore(net: nn.Module, adapters: list[dict]) -> nn.Module:
    """Add the routed LoRA ``adapters`` (peft; {name, head, r, alpha}, as ``apply`` describes them) to
    the attention projections of ``net``, frozen; each runs for its particle's rows only, the
    others see the base layers alone. Returns ``net``."""
    if not adapters:
        return net
    from peft import LoraConfig, inject_adapter_in_model

    routes = dict(getattr(net, "lora_routes", {}))
    for a in adapters:
        trainable = {n for n, p in net.named_parameters() if p.requires_grad}
        with warnings.catch_warnings():  # peft warns that a second adapter finds the first one's config
            warnings.simplefilter("ignore", UserWarning)
            inject_adapter_in_model(LoraConfig(r=int(a["r"]), lora_alpha=a["alpha"], lora_dropout=0.0,
                                               target_modules=r".*attn\.(q|k|v|out)"), net, adapter_name=a["name"])
        for n, p in net.named_parameters():  # peft marks every adapter trainable: keep the caller's choice
            p.requires_grad_(n in trainable)
        routes[int(a["head"])] = a["name"]
    net.lora_routes = routes
    if not getattr(net, "lora_routing", False):
        net.register_forward_pre_hook(_route_rows, with_kwargs=True)
        net.lora_routing = True
    for module in net.modules():
        if _is_lora(module) and not getattr(module, "lora_routing", False):
            module.register_forward_pre_hook(_pass_adapter_names, with_kwargs=True)
            module.lora_routing = True
    return net


def _is_lora(module: nn.Module) -> bool:
    return type(module).__module__.startswith("peft.") and hasattr(module, "lora_A")


def _route_rows(net: nn.Module, args: tuple, kwargs: dict):
    """Before a routed backbone runs: every LoRA layer learns which adapter each row takes
    (peft's mixed-batch forward; ``__base__`` for none)."""
    cond = kwargs["cond"] if "cond" in kwargs else args[2]
    names = [net.lora_routes.get(h, "__base__") for h in net.particles(cond).tolist()]
    for module in net.modules():
        if _is_lora(module):
            module.lora_rows = names


def _pass_adapter_names(module: nn.Module, args: tuple, kwargs: dict):
    return args, {**kwargs, "adapter_names": module.lora_rows}
