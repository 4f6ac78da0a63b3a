"""Peak memory of one HyenaDNA forward pass (what embed and score-variants run) per context length.

For sizing pipeline jobs: memory is the weights plus activations, and the activations grow linearly with
batch x length x d_model. Random weights (memory does not depend on them); forward without grad, mean
pooling as in `genomelm embed`.

- CUDA: torch.cuda.max_memory_allocated() during the pass minus what was allocated before it (the
  weights and the input), after one warm-up pass. Add the CUDA context (~0.5 GiB) for the process total.
- CPU: a lower bound. The bytes of op outputs alive at once, tracked with a TorchDispatchMode;
  temporaries that live inside one op (FFT workspaces) are not seen.

    python benchmarks/inference_memory.py --config small-32k:1x1024 --config small-32k:1x32768
    python benchmarks/inference_memory.py --config large-1m:1x1000000 --precision bf16   # on a GPU
"""

from __future__ import annotations

import argparse
import datetime
import platform
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from genomelm.model import HyenaDNA, preset
from genomelm.runtime import autocast


def parse_config(text: str) -> tuple[str, int, int]:
    """'small-32k:8x32768' -> ('small-32k', 8, 32768)."""
    name, shape = text.split(":")
    batch, length = shape.lower().split("x")
    return name, int(batch), int(length)


class LiveBytes(TorchDispatchMode):
    """Counts the storage bytes of op outputs while they are alive; ``peak`` is the maximum."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = self.peak = 0

    def _release(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(tensor, torch.Tensor) and tensor.untyped_storage().nbytes() > 0:
                self._track(tensor)
        return out

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key in self.live:
            return  # a view of a storage already counted
        self.live[key] = storage.nbytes()
        self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)
        weakref.finalize(tensor, self._release, key)  # freed with the tensor that created it


def forward(model: HyenaDNA, ids: torch.Tensor, precision: str) -> torch.Tensor:
    with autocast(ids.device, precision):
        hidden = model.hidden_states(ids)  # (B, L, D)
    return hidden.float().mean(dim=1)  # (B, D)


@torch.inference_mode()
def peak_bytes(model: HyenaDNA, ids: torch.Tensor, precision: str) -> int:
    """Activation bytes at the peak of one forward pass (beyond weights and input)."""
    forward(model, ids, precision)  # warm-up: cuFFT plans, kernel caches
    if ids.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        forward(model, ids, precision)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    counter = LiveBytes()
    with counter:
        forward(model, ids, precision)
    return counter.peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", required=True, help="PRESET:BATCHxLENGTH, repeatable")
    parser.add_argument("--precision", action="append", choices=["fp32", "bf16"], help="default: fp32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU {platform.machine()}"
    method = "max_memory_allocated" if device.type == "cuda" else "live op outputs (lower bound)"
    print(f"# {name}, {datetime.date.today()}, torch {torch.__version__}, {method}")
    print("| preset | batch x length | precision | weights MiB | activations MiB | KiB per token |")
    print("|---|---|---|---|---|---|")
    for text in args.config:
        preset_name, batch, length = parse_config(text)
        model = HyenaDNA(preset(preset_name)).eval().to(device)
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        ids = torch.randint(7, 11, (batch, length), device=device)  # A, C, G, T ids
        for precision in args.precision or ["fp32"]:
            peak = peak_bytes(model, ids, precision)
            print(
                f"| {preset_name} | {batch} x {length:,} | {precision} | {weights / 2**20:.1f} | "
                f"{peak / 2**20:,.1f} | {peak / (batch * length) / 1024:.1f} |"
            )
        del model, ids
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
