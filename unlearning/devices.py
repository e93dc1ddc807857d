"""Where the deep models (the character LM, Hugging Face LMs, the CNN) compute, and in which precision.

A device is asked for as `auto | cpu | cuda | cuda:N | mps`: `auto` is the first CUDA GPU when
torch sees one, else the CPU. An unavailable device is bad input (one line, exit 2) before anything
runs. Precision is `fp32` (the default: results bit-identical to a CPU run without this module),
`bf16` or `fp16` mixed precision (torch.autocast; fp16 with a loss scaler), for training-like loops
only: the influence maths (gradients, Hessian-vector products, CG) and every metric stay in fp32, and
the certified tabular maths stays in float64 on the CPU whatever device is asked for.

The library never picks a device by itself: a function computes where its model is
(`device_of`), and the caller moves the model there. Nothing here is process-wide.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, Field, field_validator, model_validator

from unlearning.errors import UnlearnError

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
PRECISIONS = ("fp32", "bf16", "fp16")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
CUDA_INSTALL_HINT = "install a CUDA build of torch (docs/operations.md, \"Installing\")"


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The torch.device `spec` names, checked to exist here; UnlearnError (one line) otherwise."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    text = (spec or "auto").strip().lower()
    if text == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        return _mps()
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise UnlearnError(f"--device {spec!r} is not a device: use one of {', '.join(DEVICES)}")
    return _cuda(int(match.group(1) or 0))


def _cuda(index: int) -> torch.device:
    if not torch.cuda.is_available():
        build = f"this torch ({torch.__version__}) is a CPU-only build" if torch.version.cuda is None \
            else "no CUDA GPU is visible (driver, CUDA_VISIBLE_DEVICES)"
        raise UnlearnError(f"--device cuda: CUDA is not available: {build}; use --device cpu (or auto), "
                           f"or {CUDA_INSTALL_HINT}")
    count = torch.cuda.device_count()
    if index >= count:
        raise UnlearnError(f"--device cuda:{index}: this machine has {count} CUDA GPU(s) (cuda:0 to "
                           f"cuda:{count - 1}); use one of them")
    return torch.device("cuda", index)


def _mps() -> torch.device:
    if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UnlearnError("--device mps: Apple's Metal (MPS) backend is not available on this machine; "
                           "use --device cpu (or auto)")
    return torch.device("mps")


def check_precision(precision: str, device: torch.device) -> str:
    """`precision` when the device can use it; UnlearnError otherwise (fp16 autocast needs a GPU)."""
    if precision not in PRECISIONS:
        raise UnlearnError(f"--precision {precision!r} is not a precision: use one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type == "cpu":
        raise UnlearnError("--precision fp16 needs a GPU (fp16 mixed precision on the CPU is slower than fp32 "
                           "and unsupported by some kernels); use bf16 or fp32 on the CPU")
    return precision


@dataclass(frozen=True)
class Compute:
    """A resolved device and precision: what a command's deep-model work runs on."""

    device: str = "cpu"  # str(torch.device): "cpu", "cuda:0", "mps"
    precision: str = "fp32"

    @classmethod
    def of(cls, device: str | None = "auto", precision: str = "fp32") -> "Compute":
        resolved = resolve_device(device)
        return cls(str(resolved), check_precision(precision, resolved))

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)



class DeviceSettings(BaseModel):
    """The device and precision fields of a deep model's training config. The device is stored
    resolved (`auto` → "cuda:0" or "cpu"), so the config logged to MLflow says where it ran."""

    device: str = Field("auto", validate_default=True, description="auto | cpu | cuda[:N] | mps (stored resolved)")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="training precision: fp32, or "
                                                       "bf16/fp16 mixed precision (autocast)")

    @field_validator("device")
    @classmethod
    def _resolved(cls, device: str) -> str:
        return str(resolve_device(device))

    @model_validator(mode="after")
    def _usable(self):
        check_precision(self.precision, torch.device(self.device))
        return self

    @property
    def compute(self) -> Compute:
        return Compute(self.device, self.precision)


def device_of(module: torch.nn.Module) -> torch.device:
    """Where a model's parameters are (the CPU for a model without any)."""
    first = next(module.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def autocast(device: torch.device, precision: str = "fp32") -> contextlib.AbstractContextManager:
    """Mixed precision for a forward pass (fp32: nothing changes)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[precision])


def loss_scaler(device: torch.device, precision: str = "fp32") -> torch.amp.GradScaler:
    """fp16 gradients underflow without loss scaling; disabled (a pass-through) otherwise."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


@contextlib.contextmanager
def seeded_rng(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Around a training loop: the global RNG (what dropout and any other stochastic layer draw
    from) seeded with `seed`, and the caller's state restored after. A real checkpoint's dropout or
    a user's model with dropout then gives the same model for the same seed, so a retrained
    reference is the replay it claims to be; models that draw nothing are unchanged."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def double_backward_safe(device: torch.device) -> Iterator[None]:
    """Around the forward pass of a graph that will be differentiated twice (Hessian-vector
    products): cuDNN's RNN kernels implement no double backward ("double backward is not
    implemented for cuDNN RNNs", measured on an H200), so an LSTM on CUDA is run without cuDNN
    there. Elsewhere, and on the CPU, nothing changes."""
    if device.type != "cuda":
        yield
        return
    with torch.backends.cudnn.flags(enabled=False):
        yield


def describe(device: torch.device) -> str:
    """The device with its hardware, for tables and logs: 'cuda:0 (NVIDIA H200)', 'cpu (2 threads)'."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        threads = torch.get_num_threads()
        return f"cpu ({threads} thread{'' if threads == 1 else 's'})"
    return str(device)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so a wall-clock time measures the work, not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
