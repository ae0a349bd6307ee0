"""Model registry: every torchvision classification model by name, with the classifier sized to the data.

Starting weights (``--weights``) are torchvision's named weights (``DEFAULT``, ``IMAGENET1K_V1``, ...; downloaded
when online) or the path of a local torchvision weights file (a state dict for the architecture, e.g. a copy of
``resnet50-0676ba61.pth``). Either way the images are then normalised as those weights were trained
(:func:`preprocessing`: ImageNet statistics), and the classifier is replaced when the class count differs.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tvm

from autoprune.errors import UserError, unknown_choice


def available_models() -> list[str]:
    """Names of the torchvision classification models autoprune can build."""
    return sorted(tvm.list_models(module=tvm))


def create_model(name: str, num_classes: int, weights: str | None = None) -> nn.Module:
    """Build torchvision model ``name`` with a ``num_classes``-way classifier.

    ``weights`` names torchvision weights (e.g. ``"DEFAULT"``, downloaded when online) or is the path of a local
    weights file (a state dict). With weights, the pretrained classifier is replaced by a fresh one when
    ``num_classes`` differs.
    """
    if name not in available_models():
        raise unknown_choice("model", name, available_models(), "see `autoprune models`")
    if weights is None:
        return _build(name, num_classes=num_classes)
    if is_weights_file(weights):
        model = _from_weights_file(name, Path(weights))
    else:
        model = _build(name, weights=weights)
    _replace_classifier(model, num_classes)
    return model


def is_weights_file(weights: str | None) -> bool:
    """Whether ``weights`` is a path (has a directory part or a .pt/.pth suffix, or names a file) rather than
    the name of torchvision weights."""
    if not weights:
        return False
    return "/" in weights or weights.endswith((".pt", ".pth")) or Path(weights).is_file()


def preprocessing(weights: str | None) -> str:
    """How the data must be normalised for ``weights``: "imagenet" for pretrained weights (every torchvision
    classification weight set was trained on ImageNet-normalised images), else "dataset" (the data's own)."""
    return "imagenet" if weights else "dataset"


def weights_identity(weights: str | None) -> str:
    """What about ``weights`` determines the starting model: a local file's content digest, else ""."""
    if not is_weights_file(weights):
        return ""
    path = Path(weights)
    if not path.is_file():
        raise UserError(f"weights file {weights!r} does not exist; pass a torchvision state dict or DEFAULT")
    return "weights-sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _from_weights_file(name: str, path: Path) -> nn.Module:
    """``name`` with the weights of a local state dict, built with as many classes as the file's classifier."""
    probe = _build(name)
    state = _without_aux_heads(_unwrap_state_dict(_read_weights(path), path, "weights file"), probe)
    head_name = next(n for n, m in probe.named_modules() if m is classifier(probe))
    head = state.get(f"{head_name}.weight")
    if head is None:
        raise UserError(f"weights file {str(path)!r} has no {head_name}.weight: is it for {name}?")
    model = _build(name, num_classes=int(head.shape[0])) if head.shape[0] != num_outputs(classifier(probe)) else probe
    _check_state_dict(model, state, path)
    model.load_state_dict(state)
    return model


AUX_HEADS = ("AuxLogits", "aux1", "aux2")  # Inception-v3's and GoogLeNet's auxiliary classifiers


def _without_aux_heads(state: dict, model: nn.Module) -> dict:
    """``state`` without the tensors of auxiliary heads ``model`` is built without: torchvision's own
    Inception-v3 and GoogLeNet weight files carry them, and autoprune never builds them (see :func:`_build`)."""
    dropped = tuple(f"{head}." for head in AUX_HEADS if hasattr(model, head) and getattr(model, head) is None)
    return {key: value for key, value in state.items() if not key.startswith(dropped)} if dropped else state


def _build(name: str, **kwargs) -> nn.Module:
    if name.startswith(("inception", "googlenet")):
        # Auxiliary heads only matter for ImageNet training from scratch; they break tracing, and a pruned model
        # would have to keep them consistent for nothing: they are not built (their weights are dropped).
        kwargs.setdefault("aux_logits", False)
        if "weights" not in kwargs:
            kwargs.setdefault("init_weights", True)
    try:
        return tvm.get_model(name, **kwargs)
    except (OSError, RuntimeError) as err:  # torch.hub raises URLError (an OSError) when offline
        if "weights" in kwargs:
            raise UserError(
                f"could not fetch weights {kwargs['weights']!r} for {name} ({err.__class__.__name__}: {err}); "
                "pretrained weights need network access: go online once, or train from scratch "
                "(omit --weights) or pass --checkpoint"
            ) from err
        raise


def classifier(model: nn.Module) -> nn.Module:
    """The output layer of a model, whose output size is never pruned: the last ``nn.Linear``, or where there
    is none the last ``nn.Conv2d`` (SqueezeNet classifies with a 1x1 convolution before its global pool)."""
    last_linear = last_conv = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            last_linear = module
        elif isinstance(module, nn.Conv2d):
            last_conv = module
    head = last_linear if last_linear is not None else last_conv
    if head is None:
        raise UserError(f"{type(model).__name__} has no nn.Linear or nn.Conv2d classifier; autoprune needs one")
    return head


def num_outputs(head: nn.Module) -> int:
    """The classes a classifier layer (``nn.Linear`` or ``nn.Conv2d``) outputs."""
    return head.out_features if isinstance(head, nn.Linear) else head.out_channels


def _fresh_head(head: nn.Module, num_classes: int) -> nn.Module:
    """A new, randomly initialised classifier layer like ``head`` with ``num_classes`` outputs."""
    bias = head.bias is not None
    if isinstance(head, nn.Linear):
        return nn.Linear(head.in_features, num_classes, bias=bias)
    return nn.Conv2d(head.in_channels, num_classes, head.kernel_size, head.stride, head.padding, bias=bias)


def _replace_classifier(model: nn.Module, num_classes: int) -> None:
    head = classifier(model)
    if num_outputs(head) == num_classes:
        return
    for name, module in model.named_modules():
        for child_name, child in module.named_children():
            if child is head:
                setattr(module, child_name, _fresh_head(head, num_classes))
                return


def load_checkpoint(model: nn.Module, path: Path, trust: bool = False) -> nn.Module:
    """Load a state dict (``weights_only=True``) into ``model`` and return it.

    With ``trust=True`` a fully pickled ``nn.Module`` is accepted too; unpickling runs arbitrary code, so
    that only happens on the user's explicit request. A state dict for another architecture or number
    of classes fails with the first mismatching tensor named.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} does not exist; pass the path of a saved state dict")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a bad file
        hint = (
            " (if it is a fully pickled model you trust, add --trust-checkpoint)"
            if "weights_only" in str(err) or "Unsupported global" in str(err)
            else ""
        )
        raise UserError(f"checkpoint {str(path)!r} could not be read: {_first_line(err)}{hint}") from err
    if isinstance(obj, nn.Module):
        return obj
    obj = _unwrap_state_dict(obj, path, "checkpoint")
    _check_state_dict(model, obj, path)
    model.load_state_dict(obj)
    return model


def _read_weights(path: Path):
    if path.is_file():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unpickling failure means a bad file
            raise UserError(f"weights file {str(path)!r} could not be read as a state dict: {_first_line(err)}") from err
    raise UserError(f"weights file {str(path)!r} does not exist; pass a torchvision state dict or DEFAULT")


def _unwrap_state_dict(obj, path: Path, kind: str) -> dict:
    """The state dict in a loaded file (bare, or under a "state_dict" key)."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise UserError(f"{kind} {str(path)!r} holds a {type(obj).__name__}, expected a state dict")
    return obj


def _check_state_dict(model: nn.Module, state: dict, path: Path) -> None:
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in state:
            raise UserError(
                f"checkpoint {str(path)!r} does not fit {type(model).__name__}: tensor {key!r} is missing "
                "(is it for another architecture?)"
            )
        got = state[key]
        if tuple(got.shape) != tuple(tensor.shape):
            raise UserError(
                f"checkpoint {str(path)!r} does not fit the model: tensor {key!r} has shape {tuple(got.shape)}, "
                f"the model expects {tuple(tensor.shape)} (another architecture or --num-classes?)"
            )
    extra = sorted(set(state) - set(expected))
    if extra:
        raise UserError(
            f"checkpoint {str(path)!r} does not fit {type(model).__name__}: unexpected tensor {extra[0]!r}"
        )


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else err.__class__.__name__
