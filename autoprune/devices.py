"""Where tensors live: parse ``--device``, pick the mixed-precision type, move batches.

``auto`` is CUDA when a GPU is present, else the CPU. Training results stay seeded on every device; on CUDA
they are not bit-identical to the CPU's (kernels and reduced-precision arithmetic differ), which is why the
baseline cache keeps CUDA-trained weights apart from CPU-trained ones (:mod:`autoprune.baseline`).
"""

from __future__ import annotations

import torch

from autoprune.errors import UserError

DEVICE_CHOICES = "auto|cpu|cuda|cuda:N"


def resolve_device(spec: str = "auto") -> torch.device:
    """The ``torch.device`` for ``spec`` (``auto``, ``cpu``, ``cuda`` or ``cuda:N``); a missing GPU is a UserError."""
    text = (spec or "auto").strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    kind, _, index = text.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise UserError(f"device {spec!r} is not one of {DEVICE_CHOICES}")
    if not torch.cuda.is_available():
        raise UserError(f"device {spec!r} asked for, but no CUDA GPU is available here; use --device cpu or auto")
    count = torch.cuda.device_count()
    if index and int(index) >= count:
        raise UserError(f"device {spec!r} asked for, but this machine has {count} CUDA GPU(s) (cuda:0..cuda:{count - 1})")
    return torch.device(text)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The mixed-precision type training uses on ``device``: bf16 where the GPU supports it, else fp16; None on
    the CPU (CPU autocast is slower than FP32 for these convnets and would change the CPU's figures)."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def is_convnet(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.Conv2d) for m in model.modules())


def memory_format(model: torch.nn.Module, device: torch.device) -> torch.memory_format:
    """channels_last for convnets on CUDA (tensor cores want NHWC), the default layout elsewhere."""
    if device.type == "cuda" and is_convnet(model):
        return torch.channels_last
    return torch.contiguous_format


def to_device(images: torch.Tensor, device: torch.device, layout: torch.memory_format) -> torch.Tensor:
    """A batch of images on ``device`` in ``layout`` (non-blocking from pinned memory)."""
    if images.device == device and layout == torch.contiguous_format:
        return images
    if images.dim() == 4:
        return images.to(device, non_blocking=True, memory_format=layout)
    return images.to(device, non_blocking=True)


def numerics_key(device: torch.device) -> str:
    """What about ``device`` changes trained weights: "" for the CPU, else the device type and the autocast type."""
    if device.type == "cpu":
        return ""
    dtype = autocast_dtype(device)
    return f"{device.type}/{str(dtype).removeprefix('torch.') if dtype else 'fp32'}"
