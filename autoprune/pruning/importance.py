"""Which channels go: importance criteria, scored per coupled group by Torch-Pruning.

Static criteria read the weights only. Gradient criteria first run a few calibration batches and leave a
criterion-specific tensor in each parameter's ``.grad``; Torch-Pruning's grouped Taylor / Hessian scorers
then reduce it over every layer of a coupled group (conv/linear rows and columns, BN/LN scales):

- ``taylor``: first-order Taylor (Molchanov et al.): |sum over a channel of w * dL/dw|, the estimated loss
  change from removing the whole channel;
- ``obd``: Optimal Brain Damage with the diagonal Hessian approximated by the empirical Fisher (the mean of
  per-sample squared gradients): sum of F * w^2;
- ``snip``: connection sensitivity (Lee et al.), sum of |w * dL/dw|; usable at initialization;
- ``grasp``: gradient-signal preservation (Wang et al.), structured as |sum over a channel of w * (H g)|,
  the first-order change in gradient norm when the channel goes; usable at initialization.

A dead channel (all its weights zero) scores exactly zero under every criterion but ``random``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch_pruning as tp
from torch import nn

from autoprune.errors import UserError, unknown_choice

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]

_STATIC: dict[str, Callable[[], tp.importance.Importance]] = {
    "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
    "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
    "bn_scale": lambda: tp.importance.BNScaleImportance(),
    "fpgm": lambda: tp.importance.FPGMImportance(),
    "random": lambda: tp.importance.RandomImportance(),
}
# name -> (scorer over the filled .grad, how to fill .grad)
_GRADIENT: dict[str, tuple[Callable[[], tp.importance.Importance], Callable[[nn.Module, list], None]]] = {}


def _taylor_scorer() -> tp.importance.Importance:
    return tp.importance.GroupTaylorImportance(multivariable=True)


def _elementwise_scorer() -> tp.importance.Importance:
    return tp.importance.GroupTaylorImportance(multivariable=False)


def _hessian_scorer() -> tp.importance.Importance:
    return tp.importance.GroupHessianImportance()


def _fill_loss_gradient(model: nn.Module, batches: list) -> None:
    """``.grad`` = dL/dw summed over the calibration batches."""
    model.zero_grad(set_to_none=True)
    for images, labels in batches:
        nn.functional.cross_entropy(model(images), labels).backward()


def _fill_fisher(model: nn.Module, batches: list) -> None:
    """``.grad`` = mean over samples of (dL_i/dw)^2, the diagonal empirical Fisher."""
    params = [p for p in model.parameters() if p.requires_grad]
    fisher = [torch.zeros_like(p) for p in params]
    count = 0
    for images, labels in batches:
        for i in range(len(images)):
            grads = torch.autograd.grad(
                nn.functional.cross_entropy(model(images[i : i + 1]), labels[i : i + 1]), params, allow_unused=True
            )
            for acc, g in zip(fisher, grads):
                if g is not None:
                    acc.add_(g.detach() ** 2)
            count += 1
    for p, acc in zip(params, fisher):
        p.grad = acc / max(count, 1)


def _fill_hessian_gradient(model: nn.Module, batches: list) -> None:
    """``.grad`` = H g, the Hessian of the loss times its (detached) gradient, by double backprop."""
    params = [p for p in model.parameters() if p.requires_grad]
    grad = [torch.zeros_like(p) for p in params]
    for images, labels in batches:
        gs = torch.autograd.grad(nn.functional.cross_entropy(model(images), labels), params, allow_unused=True)
        for acc, g in zip(grad, gs):
            if g is not None:
                acc.add_(g.detach())
    hg = [torch.zeros_like(p) for p in params]
    for images, labels in batches:
        gs = torch.autograd.grad(
            nn.functional.cross_entropy(model(images), labels), params, create_graph=True, allow_unused=True
        )
        dot = sum((g * fixed).sum() for g, fixed in zip(gs, grad) if g is not None)
        if not isinstance(dot, torch.Tensor) or not dot.requires_grad:
            continue
        for acc, h in zip(hg, torch.autograd.grad(dot, params, allow_unused=True)):
            if h is not None:
                acc.add_(h.detach())
    for p, h in zip(params, hg):
        p.grad = h


_GRADIENT.update(
    {
        "taylor": (_taylor_scorer, _fill_loss_gradient),
        "obd": (_hessian_scorer, _fill_fisher),
        "snip": (_elementwise_scorer, _fill_loss_gradient),
        "grasp": (_taylor_scorer, _fill_hessian_gradient),
    }
)
IMPORTANCE_CRITERIA = tuple(sorted([*_STATIC, *_GRADIENT]))
GRADIENT_CRITERIA = tuple(sorted(_GRADIENT))


def needs_calibration(name: str) -> bool:
    return name in _GRADIENT


def make_importance(name: str) -> tp.importance.Importance:
    """The Torch-Pruning scorer for criterion ``name`` (gradient criteria also need :func:`prepare_gradients`)."""
    if name in _STATIC:
        return _STATIC[name]()
    if name in _GRADIENT:
        return _GRADIENT[name][0]()
    raise unknown_choice("importance criterion", name, IMPORTANCE_CRITERIA)


def prepare_gradients(model: nn.Module, name: str, calibration: Batches | None) -> None:
    """Run the calibration batches and leave criterion ``name``'s per-weight statistic in ``.grad``.

    The model is put in eval mode first so BN statistics are not updated by calibration.
    """
    if name not in _GRADIENT:
        return
    batches = list(calibration) if calibration is not None else []
    if not batches:
        raise UserError(f"importance criterion {name!r} needs calibration batches: pass --data (or use l1)")
    model.eval()
    _GRADIENT[name][1](model, batches)
