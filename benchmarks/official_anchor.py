"""genomelm against the OFFICIAL HyenaDNA model, side by side in one run: inference and training throughput.

The official standalone model file (Apache-2.0; needs einops, torchvision and transformers) is imported at run
time from --official PATH and never copied into the project (DESIGN.md §8):

    python benchmarks/official_anchor.py --official /path/to/standalone_hyenadna.py

Inference: forward without grad plus mean pooling (what `genomelm embed` spends its time on), fp32 and bf16
autocast, over the shapes of benchmarks/embed_throughput.py. Training: forward + next-token loss + backward + one
AdamW step, bf16 autocast, 2^18 tokens per step (batch = 2^18 // context). Both models get the same preset
(residual stream in fp32, head tied to the embedding), random weights and random tokens. genomelm runs with the
default dispatcher (cuda backend, mode auto); --compile adds a genomelm column with torch.compile'd blocks.
Timing: CUDA events after warm-up, median of --repeats runs. Each table names device, date, torch and triton.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from _timing import seconds
from embed_throughput import parse_config
from pretrain_throughput import environment, parse_shape

from genomelm.model import HyenaDNA, preset

INFERENCE_SHAPES = ["small-32k:8x32768", "medium-160k:4x131072", "large-1m:1x1000000"]
TRAINING_SHAPES = ["small-32k:1024", "small-32k:32768", "medium-160k:131072"]
TRAINING_TOKENS = 1 << 18


def load_official(path: Path):
    """The official standalone module, imported from its file (not from the project)."""
    spec = importlib.util.spec_from_file_location("standalone_hyenadna", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class OfficialLM(torch.nn.Module):
    """The official backbone with the LM head tied to its embedding (the official LM's head, the same work as
    genomelm's tied lm_head). ``hidden_states`` mirrors genomelm's API for the inference step."""

    def __init__(self, official, name: str):
        super().__init__()
        config = preset(name)
        layer = {
            "_name_": "hyena",
            "emb_dim": config.emb_dim,
            "filter_order": config.filter_order,
            "short_filter_order": config.short_filter_order,
            "l_max": config.l_max,
            "modulate": config.modulate,
            "w": config.activation_freq,
            "lr": 6e-4,
            "wd": 0.0,
            "lr_pos_emb": 0.0,
        }
        self.model = official.HyenaDNAModel(
            d_model=config.d_model,
            n_layer=config.n_layer,
            d_inner=config.d_inner,
            vocab_size=config.vocab_size,
            layer=layer,
            pad_vocab_size_multiple=config.pad_vocab_size_multiple,
            residual_in_fp32=config.residual_in_fp32,
            use_head=False,
        )

    def hidden_states(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids)  # (B, L, D) after ln_f

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        weight = self.model.backbone.embeddings.word_embeddings.weight
        return F.linear(self.hidden_states(input_ids), weight)  # (B, L, V)


def genomelm_model(name: str, compile_blocks: bool) -> HyenaDNA:
    model = HyenaDNA(preset(name))
    model.set_conv_backend("cuda")
    if compile_blocks:
        model.set_compile(True)
    return model


FIRST_STEP_SECONDS: dict[str, float] = {}  # wall seconds of the last measured model's first step (compilation)


def median_seconds(step, device, warmup: int, repeats: int) -> float:
    started = time.perf_counter()
    step()
    torch.cuda.synchronize()
    FIRST_STEP_SECONDS["last"] = time.perf_counter() - started
    for _ in range(warmup - 1):
        step()
    torch.cuda.synchronize()
    return statistics.median(seconds(step, device) for _ in range(repeats))


def inference_rate(model, batch: int, length: int, precision: str, args) -> float:
    """Mbp/s of forward without grad + mean pooling."""
    device = torch.device("cuda")
    ids = torch.randint(7, 11, (batch, length), device=device)

    @torch.no_grad()
    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
            hidden = model.hidden_states(ids)
        return hidden.float().mean(dim=1)

    return batch * length / median_seconds(step, device, args.warmup, args.repeats) / 1e6


def training_rate(model, length: int, args) -> float:
    """M tokens/s of forward + loss + backward + AdamW, bf16 autocast, TRAINING_TOKENS per step."""
    device = torch.device("cuda")
    batch = max(1, TRAINING_TOKENS // length)
    ids = torch.randint(7, 11, (batch, length + 1), device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(ids[:, :-1])  # (B, L, V)
        loss = F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return batch * length / median_seconds(step, device, args.warmup, args.repeats) / 1e6


def contenders(official, name: str, args):
    """(label, factory) of every model compared at one preset: official first."""
    found = [("official", lambda: OfficialLM(official, name)), ("genomelm", lambda: genomelm_model(name, False))]
    if args.compile:
        found.append(("genomelm+compile", lambda: genomelm_model(name, True)))
    return found


def run_one(factory, measure, train: bool) -> float:
    torch._dynamo.reset()  # each compiled model compiles afresh (no cache-size limit reached across shapes)
    torch.manual_seed(0)
    model = factory().cuda().train(train)
    try:
        return measure(model)
    except torch.OutOfMemoryError:
        return float("nan")
    finally:
        del model
        gc.collect()
        torch.cuda.empty_cache()


def _row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def _rates_with_ratios(rates: list[float]) -> list[str]:
    """[official, genomelm, ...] -> the rates, then each genomelm rate over the official one."""
    cells = [f"{r:.2f}" for r in rates]
    return cells + [f"{r / rates[0]:.2f}x" for r in rates[1:]]


def _header(labels: list[str], first: list[str], args) -> None:
    extra = ["first step s (compile)"] if args.compile else []
    print(_row([*first, *labels, *(f"{lab} / official" for lab in labels[1:]), *extra]))
    print(_row(["---"] * (len(first) + 2 * len(labels) - 1 + len(extra))))


def _measure_all(official, name: str, measure, train: bool, args) -> list[str]:
    """Rates and ratios of every contender, and (with --compile) the compiled model's first-step seconds."""
    rates = [run_one(factory, measure, train=train) for _, factory in contenders(official, name, args)]
    extra = [f"{FIRST_STEP_SECONDS['last']:.1f}"] if args.compile else []
    return _rates_with_ratios(rates) + extra


def inference_table(official, args) -> None:
    labels = [label for label, _ in contenders(official, "small-32k", args)]
    print("\n## Inference (forward without grad + mean pooling), Mbp/s")
    _header(labels, ["shape", "precision"], args)
    for text in args.inference:
        name, batch, length = parse_config(text)
        for precision in args.precision:
            measure = partial(inference_rate, batch=batch, length=length, precision=precision, args=args)
            cells = _measure_all(official, name, measure, False, args)
            print(_row([f"{name} {batch} x {length:,}", precision, *cells]), flush=True)


def training_table(official, args) -> None:
    labels = [label for label, _ in contenders(official, "small-32k", args)]
    print(f"\n## Training (forward + backward + AdamW, bf16 autocast, {TRAINING_TOKENS:,} tokens/step), M tokens/s")
    _header(labels, ["shape", "batch"], args)
    for name, length in args.training:
        cells = _measure_all(official, name, partial(training_rate, length=length, args=args), True, args)
        batch = max(1, TRAINING_TOKENS // length)
        print(_row([f"{name} @ {length:,}", str(batch), *cells]), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, required=True, help="path of the official standalone_hyenadna.py")
    parser.add_argument("--inference", nargs="*", default=INFERENCE_SHAPES, help="PRESET:BATCHxLENGTH ...")
    parser.add_argument("--training", nargs="*", type=parse_shape, default=[parse_shape(s) for s in TRAINING_SHAPES])
    parser.add_argument("--precision", nargs="+", default=["bf16", "fp32"], choices=("bf16", "fp32"))
    parser.add_argument("--compile", action="store_true", help="add a column with torch.compile'd genomelm blocks")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("official_anchor.py needs a CUDA GPU")
    official = load_official(args.official)
    started = time.perf_counter()
    print(f"# official HyenaDNA ({args.official.name}) vs genomelm (cuda backend, mode auto): {environment()}")
    inference_table(official, args)
    training_table(official, args)
    print(f"\n# total {time.perf_counter() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
