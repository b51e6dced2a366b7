"""Optimizers and learning-rate schedules from a config's ``Optimizer`` section: the one builder of every family.

A family hands :func:`build_optimizer` *parameter groups* (:class:`ParamGroup`): the parameters that share
one weight-decay coefficient. The groups come from rules, each ``(name, weight_decay, selects)``; a parameter
joins the first rule that selects it, else the catch-all group (:func:`assign_groups`):

* the default of :meth:`Task.build_optimizers <paddle_models.engine.task.Task.build_optimizers>`
  (:func:`default_groups`): every trainable weight at ``Optimizer.weight_decay``; at 0 the parameters whose
  structured name (``model.named_parameters()``) contains one of the ``Optimizer.no_decay`` patterns (the
  PaddleNLP fine-tuning recipe: ``[bias, norm]``), and biases and normalization weights with
  ``Optimizer.no_decay_bias_norm``;
* the recommender task: the embedding tables at ``Arch.embedding_regularizer``, the other weights at
  ``Arch.net_regularizer``; Wide&Deep adds a second optimizer, FTRL-Proximal (:mod:`.ftrl`) with the
  ``Optimizer.wide`` settings, over the wide part.

What a group's coefficient means depends on the optimizer: an L2 term added to the gradient for Adam,
Adagrad, SGD and FTRL; the decoupled decay of AdamW. The builder hands Paddle the plainest form that
expresses the groups, which also decides what ``Optimizer.grad_clip`` (clip by global norm) measures:

* one coefficient for all groups: one parameter list (the groups' parameters in group order), one norm;
* AdamW whose groups have one nonzero coefficient: one list and ``apply_decay_param_fun``, one norm;
* otherwise Paddle's parameter groups, which Paddle steps (and clips) group by group.

:func:`build_scheduler` turns ``Optimizer.schedule`` into a learning rate (a float or an ``LRScheduler``);
:class:`PlateauScale` scales one by a factor after evaluations that did not improve (FuxiCTR's
``reduce_lr_on_plateau``).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import paddle

from .ftrl import FTRL

#: a grouping rule: (group name, weight decay, which parameters it takes)
GroupRule = tuple[str, float, Callable[[paddle.Tensor], bool]]


@dataclass(frozen=True)
class ParamGroup:
    """Parameters updated with one weight-decay coefficient; ``name`` says which (for messages and tests)."""

    name: str
    params: tuple[paddle.Tensor, ...]
    weight_decay: float


def trainable(parameters: Iterable[paddle.Tensor]) -> list[paddle.Tensor]:
    """The parameters that receive gradients (batch-norm statistics and frozen weights left out)."""
    return [p for p in parameters if not p.stop_gradient]


def assign_groups(parameters: Iterable[paddle.Tensor], rules: Sequence[GroupRule],
                  rest: tuple[str, float]) -> list[ParamGroup]:
    """Trainable ``parameters`` into groups: each into the first rule ``(name, weight_decay, selects)`` whose
    ``selects(param)`` is true, else into ``rest = (name, weight_decay)``. Groups in rule order, ``rest``
    last, each keeping the parameters' order; empty groups are left out."""
    members: list[list[paddle.Tensor]] = [[] for _ in range(len(rules) + 1)]
    for param in trainable(parameters):
        index = next((i for i, (_, _, selects) in enumerate(rules) if selects(param)), len(rules))
        members[index].append(param)
    named = [(name, decay) for name, decay, _ in rules] + [rest]
    return [ParamGroup(name, tuple(params), float(decay))
            for (name, decay), params in zip(named, members, strict=True) if params]


def is_bias_or_norm(param: paddle.Tensor) -> bool:
    """A bias or normalization weight: one dimension or fewer, or ``bias`` / ``norm`` in its name."""
    name = param.name.lower()
    return len(param.shape) <= 1 or "bias" in name or "norm" in name


def name_patterns_rule(patterns, names: Mapping[str, str] | None, key: str = "Optimizer.no_decay") -> GroupRule:
    """A rule taking the parameters whose structured name (``names``: Paddle's parameter name -> the name in
    ``model.named_parameters()``) contains one of ``patterns`` (``key``: the config key, for errors)."""
    if not isinstance(patterns, (list, tuple)) or not all(isinstance(p, str) and p for p in patterns):
        raise ValueError(f"{key}: expected a list of non-empty parameter-name patterns, got {patterns!r}")
    if names is None:
        raise ValueError(f"{key}: the parameters' structured names are needed (pass model.named_parameters())")
    patterns = tuple(patterns)
    return ("no_decay", 0.0, lambda param: any(p in names.get(param.name, "") for p in patterns))


def default_groups(parameters: Iterable[paddle.Tensor], optimizer_cfg,
                   names: Mapping[str, str] | None = None) -> list[ParamGroup]:
    """The whole model at ``Optimizer.weight_decay``; exempt (decay 0): the parameters whose structured name
    contains one of the ``Optimizer.no_decay`` patterns (``names``: Paddle's parameter name -> structured
    name, e.g. ``{p.name: n for n, p in model.named_parameters()}``), then biases and normalization weights
    with ``Optimizer.no_decay_bias_norm``. With no decay (or no exemption) it is one group, so the optimizer
    sees the parameters in model order."""
    weight_decay = float(optimizer_cfg["weight_decay"])
    exempt: list[GroupRule] = []
    if optimizer_cfg["no_decay"]:
        exempt.append(name_patterns_rule(optimizer_cfg["no_decay"], names))
    if optimizer_cfg["no_decay_bias_norm"]:
        exempt.append(("no_decay_bias_norm", 0.0, is_bias_or_norm))
    if weight_decay == 0 or not exempt:
        return assign_groups(parameters, [], ("all", weight_decay))
    return assign_groups(parameters, exempt, ("decay", weight_decay))


# ---- the optimizer ---------------------------------------------------------------------------
def _flat(groups: Sequence[ParamGroup]) -> list[paddle.Tensor]:
    return [p for group in groups for p in group.params]


def _paddle_groups(groups: Sequence[ParamGroup]) -> list[dict]:
    return [{"params": list(group.params), "weight_decay": group.weight_decay} for group in groups]


def _l2_decay(groups: Sequence[ParamGroup]) -> dict:
    """``parameters`` / ``weight_decay`` arguments where decay is an L2 term (Adam, Adagrad, SGD, FTRL)."""
    decays = {group.weight_decay for group in groups}
    if len(decays) <= 1:
        decay = decays.pop() if decays else 0.0
        return {"parameters": _flat(groups), "weight_decay": decay or None}
    return {"parameters": _paddle_groups(groups), "weight_decay": None}


def _decoupled_decay(groups: Sequence[ParamGroup]) -> dict:
    """``parameters`` / ``weight_decay`` (/ ``apply_decay_param_fun``) arguments of AdamW."""
    decays = {group.weight_decay for group in groups}
    nonzero = decays - {0.0}
    if len(nonzero) > 1:
        return {"parameters": _paddle_groups(groups), "weight_decay": 0.0}
    arguments = {"parameters": _flat(groups), "weight_decay": nonzero.pop() if nonzero else 0.0}
    if len(decays) > 1:
        decayed = {p.name for group in groups if group.weight_decay for p in group.params}
        arguments["apply_decay_param_fun"] = lambda name: name in decayed
    return arguments


def _grad_clip(optimizer_cfg) -> paddle.nn.ClipGradByGlobalNorm | None:
    clip_norm = float(optimizer_cfg["grad_clip"])
    return paddle.nn.ClipGradByGlobalNorm(clip_norm) if clip_norm > 0 else None


def _adamw(optimizer_cfg, groups, learning_rate):
    return paddle.optimizer.AdamW(learning_rate=learning_rate, beta1=optimizer_cfg["beta1"],
                                  beta2=optimizer_cfg["beta2"], epsilon=optimizer_cfg["epsilon"],
                                  grad_clip=_grad_clip(optimizer_cfg), **_decoupled_decay(groups))


def _adam(optimizer_cfg, groups, learning_rate):
    return paddle.optimizer.Adam(learning_rate=learning_rate, beta1=optimizer_cfg["beta1"],
                                 beta2=optimizer_cfg["beta2"], epsilon=optimizer_cfg["epsilon"],
                                 grad_clip=_grad_clip(optimizer_cfg), **_l2_decay(groups))


def _adagrad(optimizer_cfg, groups, learning_rate):
    return paddle.optimizer.Adagrad(learning_rate=learning_rate, epsilon=optimizer_cfg["epsilon"],
                                    grad_clip=_grad_clip(optimizer_cfg), **_l2_decay(groups))


def _sgd(optimizer_cfg, groups, learning_rate):
    return paddle.optimizer.SGD(learning_rate=learning_rate, grad_clip=_grad_clip(optimizer_cfg), **_l2_decay(groups))


def _ftrl(ftrl_cfg, groups, learning_rate):
    """FTRL-Proximal with the ``Optimizer.wide`` settings (that section has no ``grad_clip``: no clipping)."""
    return FTRL(learning_rate, l1=float(ftrl_cfg["l1"]), l2=float(ftrl_cfg["l2"]),
                lr_power=float(ftrl_cfg["lr_power"]), beta=float(ftrl_cfg["beta"]),
                initial_accumulator_value=float(ftrl_cfg["initial_accumulator_value"]), **_l2_decay(groups))


#: optimizers an ``Optimizer.name`` selects
SECTION_OPTIMIZERS = {"adamw": _adamw, "adam": _adam, "adagrad": _adagrad, "sgd": _sgd}
#: optimizers a caller selects by ``name=`` (their settings are another section's keys)
NAMED_OPTIMIZERS = {**SECTION_OPTIMIZERS, "ftrl": _ftrl}


def build_optimizer(optimizer_cfg, groups: Sequence[ParamGroup], learning_rate,
                    name: str | None = None) -> paddle.optimizer.Optimizer:
    """One optimizer over parameter ``groups`` (each with its own weight decay, see the module docstring).

    ``optimizer_cfg`` is an ``Optimizer`` section (``name``: AdamW | Adam | Adagrad | SGD, ``beta1``,
    ``beta2``, ``epsilon``, ``grad_clip``); ``name="FTRL"`` builds FTRL-Proximal from a section of its
    settings (``Optimizer.wide``: ``l1``, ``l2``, ``lr_power``, ``beta``, ``initial_accumulator_value``).
    ``learning_rate`` is a float or an ``LRScheduler`` (:func:`build_scheduler`). Empty groups and
    parameters without gradient are left out."""
    makers = NAMED_OPTIMIZERS if name else SECTION_OPTIMIZERS
    chosen = name or optimizer_cfg["name"]
    make = makers.get(chosen.lower())
    if make is None:
        known = "AdamW, Adam, Adagrad, SGD" + (", FTRL" if name else "")
        raise ValueError(f"Optimizer.name: unknown optimizer {chosen!r} ({known})")
    kept = [ParamGroup(g.name, tuple(trainable(g.params)), g.weight_decay) for g in groups]
    return make(optimizer_cfg, [g for g in kept if g.params], learning_rate)


# ---- the schedule ----------------------------------------------------------------------------
def _warmup_steps(optimizer_cfg, total_steps: int) -> int:
    """``Optimizer.warmup_steps``, else ``warmup_ratio`` of all steps."""
    return int(optimizer_cfg["warmup_steps"]) or int(round(float(optimizer_cfg["warmup_ratio"]) * total_steps))


def _schedule_factor(name: str, warmup: int, total_steps: int) -> Callable[[int], float] | None:
    """The multiplier of the peak rate at each step for ``Optimizer.schedule`` (None: constant, no warmup)."""
    if name == "constant":
        return (lambda step: min(1.0, (step + 1) / warmup)) if warmup > 0 else None
    if name == "linear":
        return lambda step: ((step + 1) / warmup if warmup > 0 and step < warmup
                             else max(0.0, (total_steps - step) / max(1, total_steps - warmup)))
    if name == "cosine":
        def cosine(step):
            if warmup > 0 and step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, total_steps - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        return cosine
    if name == "noam":
        # the configured lr already folds in the paper's d_model^-0.5 scale
        steps = max(1, warmup)
        return lambda step: min((step + 1) ** -0.5, (step + 1) * steps ** -1.5) * steps ** 0.5
    raise ValueError(f"Optimizer.schedule: unknown schedule {name!r} (constant, linear, cosine, noam)")


def build_scheduler(optimizer_cfg, total_steps: int):
    """The learning rate of ``Optimizer.schedule`` over ``total_steps`` optimizer steps: a float (constant,
    no warmup) or a ``paddle.optimizer.lr.LambdaDecay`` of ``Optimizer.lr``."""
    lr = float(optimizer_cfg["lr"])
    warmup = _warmup_steps(optimizer_cfg, total_steps)
    factor = _schedule_factor(optimizer_cfg["schedule"], warmup, max(int(total_steps), 1))
    return lr if factor is None else paddle.optimizer.lr.LambdaDecay(lr, factor)


def schedulers_of(*learning_rates) -> list:
    """The ``LRScheduler`` objects among ``learning_rates`` (a float is a constant rate: nothing to step)."""
    return [lr for lr in learning_rates if isinstance(lr, paddle.optimizer.lr.LRScheduler)]


class PlateauScale(paddle.optimizer.lr.LRScheduler):
    """FuxiCTR's ``reduce_lr_on_plateau``: the learning rate (a float, or another scheduler's value) times a
    scale that is multiplied by ``factor`` after every evaluation whose monitored metric did not improve
    (never below ``min_lr``). The Trainer steps it once per optimizer step like any scheduler; the rec task
    reports each validation result to :meth:`observe` (from ``compute_metrics``). Its state (scale, best)
    is saved in checkpoints with the other scheduler state."""

    def __init__(self, inner, factor: float = 0.1, min_lr: float = 1e-6, mode: str = "max"):
        if not 0 < factor < 1:
            raise ValueError(f"Optimizer.reduce_on_plateau: factor must be in (0, 1), got {factor}")
        self.inner = inner
        self.factor, self.min_lr, self.mode = float(factor), float(min_lr), mode
        self.scale, self.best, self.num_decays = 1.0, None, 0
        self._started = False  # the base class steps once in __init__: the inner scheduler already did
        base = inner.last_lr if isinstance(inner, paddle.optimizer.lr.LRScheduler) else float(inner)
        super().__init__(base)
        self._started = True

    def _inner_lr(self) -> float:
        return self.inner.last_lr if isinstance(self.inner, paddle.optimizer.lr.LRScheduler) else float(self.inner)

    def get_lr(self) -> float:
        lr = self._inner_lr()
        return max(lr * self.scale, min(self.min_lr, lr))

    def step(self, epoch=None):
        if self._started and isinstance(self.inner, paddle.optimizer.lr.LRScheduler):
            self.inner.step()
        super().step(epoch)

    def observe(self, value: float) -> bool:
        """Report an evaluation; returns True when the learning rate was reduced."""
        if value is None or value != value:  # NaN: not an improvement
            improved = False
        elif self.best is None:
            improved = True
        else:
            improved = value > self.best if self.mode == "max" else value < self.best
        if improved:
            self.best = float(value)
            return False
        self.scale *= self.factor
        self.num_decays += 1
        self.last_lr = self.get_lr()
        return True

    def state_keys(self):
        self.keys = ["last_epoch", "last_lr", "scale", "best", "num_decays"]

    def state_dict(self):
        d = super().state_dict()
        if isinstance(self.inner, paddle.optimizer.lr.LRScheduler):
            d["inner"] = self.inner.state_dict()
        return d

    def set_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        inner = state_dict.pop("inner", None)
        super().set_state_dict(state_dict)
        if inner is not None and isinstance(self.inner, paddle.optimizer.lr.LRScheduler):
            self.inner.set_state_dict(inner)

    set_dict = set_state_dict
