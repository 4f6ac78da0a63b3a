"""Order-k Markov baselines for next-base perplexity on held-out DNA (the quality bar of the shipped model).

    python benchmarks/markov_baseline.py --fasta GRCh37_chrX_1-70M.fa.gz \
        --train X:1-65,000,000 --test X:65,000,001- --orders 2-12

Counts (k+1)-mers of the training region (both strands by default, as the model is trained with
reverse-complement augmentation) with numpy, then scores every A/C/G/T base of the test region after its
first from its k preceding bases (fewer where the region starts or an N intervenes), on the forward strand
(and the reverse complement with --both-strands). Two estimators per order:
  - additive: P(b | ctx) = (c(ctx b) + a) / (c(ctx) + 4a), the best a of a grid;
  - interpolated: P_k = (c(ctx b) + beta P_{k-1}) / (c(ctx) + beta) down to P_0 (a Dirichlet-prior backoff), the
    best beta of a grid.
The smoothing constant is chosen on the test region itself, which can only flatter the baseline.
Perplexity = exp(mean -ln P), bits per base = mean -log2 P, the definitions of `genomelm evaluate`.
"""

from __future__ import annotations

import argparse
import datetime
import math
import platform
import time

import numpy as np

from genomelm.formats.fasta import FastaSource, parse_region
from genomelm.tokenizer import A_ID, T_ID
from genomelm.training.windows import load_intervals

ALPHAS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
BETAS = tuple(2.0**e for e in range(-2, 12))  # 0.25 ... 2048


def codes_of(tokens: np.ndarray) -> np.ndarray:
    """Token ids -> 2-bit base codes A0 C1 G2 T3, -1 for anything else (N)."""
    codes = tokens.astype(np.int64) - A_ID
    codes[(tokens < A_ID) | (tokens > T_ID)] = -1
    return codes


def reverse_complement_codes(codes: np.ndarray) -> np.ndarray:
    return np.where(codes >= 0, 3 - codes, -1)[::-1].copy()


def count_tables(strands: list[np.ndarray], max_order: int) -> list[np.ndarray]:
    """tables[k][ctx * 4 + b] = count of context ctx (k bases, first base most significant) followed by b."""
    tables = [np.zeros(4 ** (k + 1), dtype=np.int64) for k in range(max_order + 1)]
    for codes in strands:
        key = np.maximum(codes, 0)  # (n,) the k = 0 key: the base itself
        valid = codes >= 0
        for k in range(max_order + 1):
            if k:
                # Add the base k positions back as the most significant digit: key = ctx(k) * 4 + b.
                back = np.concatenate([np.full(k, -1), codes[:-k]])
                key = key + np.maximum(back, 0) * 4**k
                valid = valid & (back >= 0)
            tables[k] += np.bincount(key[valid], minlength=4 ** (k + 1))
    return tables


def context_keys(codes: np.ndarray, max_order: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Per order k, the (k+1)-mer key ending at each position; and the usable context length per position."""
    n = len(codes)
    last_n = np.maximum.accumulate(np.where(codes < 0, np.arange(n), -1))  # last N at or before p
    previous_n = np.concatenate([[-1], last_n[:-1]])  # last N strictly before p
    available = np.arange(n) - previous_n - 1  # bases of valid left context inside the region
    keys, key = [], np.maximum(codes, 0)
    for k in range(max_order + 1):
        if k:
            back = np.concatenate([np.full(k, 0), np.maximum(codes[:-k], 0)])
            key = key + back * 4**k
        keys.append(key)
    return keys, available


def nll_additive(tables, keys, available, targets_ok, k: int, alpha: float) -> np.ndarray:
    """-ln P per scored position under the order-k additive estimator (order reduced where context is short)."""
    order = np.minimum(available, k)[targets_ok]
    out = np.empty(len(order))
    for j in np.unique(order):
        sel = order == j
        key = keys[j][targets_ok][sel]
        table = tables[j]
        ctx_total = table.reshape(-1, 4).sum(axis=1)[key // 4]
        out[sel] = -np.log((table[key] + alpha) / (ctx_total + 4 * alpha))
    return out


def nll_interpolated(tables, keys, available, targets_ok, k: int, beta: float) -> np.ndarray:
    """-ln P per scored position, P_j = (c + beta P_{j-1}) / (c(ctx) + beta) from j = 0 up to min(k, context)."""
    order = np.minimum(available, k)[targets_ok]
    prob = np.full(len(order), 0.25)
    for j in range(k + 1):
        sel = order >= j
        key = keys[j][targets_ok][sel]
        table = tables[j]
        ctx_total = table.reshape(-1, 4).sum(axis=1)[key // 4]
        prob[sel] = (table[key] + beta * prob[sel]) / (ctx_total + beta)
    return -np.log(prob)


def evaluate(tables, test_strands, max_order: int, orders: list[int]) -> list[dict]:
    rows = []
    prepared = []
    for codes in test_strands:
        keys, available = context_keys(codes, max_order)
        scored = codes >= 0
        scored[0] = False  # the region's first base has no context (as in `genomelm evaluate`)
        prepared.append((keys, available, scored))
    for k in orders:
        for method, grid, fn in (("additive", ALPHAS, nll_additive), ("interpolated", BETAS, nll_interpolated)):
            best = None
            for value in grid:
                nll = np.concatenate([fn(tables, keys, av, ok, k, value) for keys, av, ok in prepared])
                loss = float(nll.mean())
                if best is None or loss < best["loss"]:
                    best = {"k": k, "method": method, "smoothing": value, "loss": loss, "bases": len(nll)}
            best.update(perplexity=math.exp(best["loss"]), bits_per_base=best["loss"] / math.log(2))
            rows.append(best)
            print(
                f"| {k} | {method} | {best['smoothing']} | {best['bases']:,} | {best['perplexity']:.4f} "
                f"| {best['bits_per_base']:.4f} |",
                flush=True,
            )
    return rows


def load_codes(fasta_path: str, region_text: str) -> np.ndarray:
    with FastaSource(fasta_path) as fasta:
        region = parse_region(region_text)
        end = region.end if region.end is not None else fasta.contig_lengths()[region.contig]
        from genomelm.training.windows import Interval

        (tokens,) = load_intervals(fasta, [Interval(region.contig, region.start, end)])
    return codes_of(tokens)


def parse_orders(text: str) -> list[int]:
    if "-" in text:
        low, high = text.split("-")
        return list(range(int(low), int(high) + 1))
    return [int(k) for k in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fasta", required=True)
    parser.add_argument("--train", required=True, help="training region, 1-based inclusive (chr:start-end)")
    parser.add_argument("--test", required=True, help="held-out region, 1-based inclusive")
    parser.add_argument("--orders", default="2-12", help="e.g. 2-12 or 4,8,12")
    parser.add_argument("--forward-only", action="store_true", help="count the training forward strand only")
    parser.add_argument("--both-strands", action="store_true", help="also score the test reverse complement")
    args = parser.parse_args()
    started = time.perf_counter()
    orders = parse_orders(args.orders)
    train = load_codes(args.fasta, args.train)
    strands = [train] if args.forward_only else [train, reverse_complement_codes(train)]
    tables = count_tables(strands, max(orders))
    test = load_codes(args.fasta, args.test)
    tests = [test, reverse_complement_codes(test)] if args.both_strands else [test]
    print(
        f"# Markov baselines: train {args.train} ({'forward' if args.forward_only else 'both strands'}), "
        f"test {args.test} ({'both strands' if args.both_strands else 'forward'}); "
        f"{platform.processor() or platform.machine()}; {datetime.date.today().isoformat()}"
    )
    print("| k | estimator | smoothing | bases | perplexity | bits/base |")
    print("|---:|---|---:|---:|---:|---:|")
    rows = evaluate(tables, tests, max(orders), orders)
    best = min(rows, key=lambda r: r["loss"])
    print(
        f"\nbest: order {best['k']} {best['method']} (smoothing {best['smoothing']}): perplexity "
        f"{best['perplexity']:.4f}, {best['bits_per_base']:.4f} bits/base ({time.perf_counter() - started:.0f} s)"
    )


if __name__ == "__main__":
    main()
