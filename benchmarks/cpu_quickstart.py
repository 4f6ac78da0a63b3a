"""The README quick start on CPU: where its time and memory go, and old vs new commit side by side.

    python benchmarks/cpu_quickstart.py                  # side by side: d99e0e3 vs this tree, 5 runs each
    python benchmarks/cpu_quickstart.py --old REV --repeats 7
    python benchmarks/cpu_quickstart.py --profile-only   # profile table of this tree only

Side by side: `genomelm embed examples/lambda_virus.fa -o OUT` runs as a subprocess with PYTHONPATH pointing at
each tree in turn (old, new, old, new, ...: shared machines are noisy, so both see the same noise); wall time,
user/system CPU time and peak RSS of each process (wait4), medians, ratios; the two outputs are compared byte for
byte. The old commit is checked out with `git worktree add --detach` into a temporary directory (removed after).
Profile: one process per tree runs the same steps in-process: phases (imports, model load, forward, the rest of
the command) with their CPU time, page faults and RSS, and the forward's time by operator group (torch.profiler).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
INPUT = "examples/lambda_virus.fa"
OLD_DEFAULT = "d99e0e3"

# torch.profiler operator names -> the part of the model they belong to.
OP_GROUPS = {
    "matrix products (Linear)": ("aten::addmm", "aten::mm", "aten::bmm"),
    "short causal conv (oneDNN)": ("aten::mkldnn_convolution", "aten::convolution_overrideable"),
    "FFT (r2c, c2r)": ("aten::_fft_r2c", "aten::_fft_c2r", "aten::_fft_c2c"),
    "copies, pads, clones, fills": ("aten::copy_", "aten::constant_pad_nd", "aten::clone", "aten::fill_"),
    "GELU": ("aten::gelu",),
    "elementwise (mul, add, sin, exp)": ("aten::mul", "aten::add", "aten::add_", "aten::sin", "aten::exp"),
    "LayerNorm": ("aten::native_layer_norm",),
}


def main() -> None:
    args = _parse()
    if args.profile_child:
        print(json.dumps(_profile_here()))
        return
    _header()
    if args.profile_only:
        _print_profiles({"this tree": _profile_tree(HERE)})
        return
    old_tree = Path(tempfile.mkdtemp(prefix="genomelm-old-")) / "tree"
    subprocess.run(["git", "-C", str(HERE), "worktree", "add", "--detach", str(old_tree), args.old], check=True)
    try:
        trees = {f"old {args.old}": old_tree, "new (this tree)": HERE}
        _print_profiles({name: _profile_tree(tree) for name, tree in trees.items()})
        _side_by_side(trees, args.repeats)
    finally:
        subprocess.run(["git", "-C", str(HERE), "worktree", "remove", "--force", str(old_tree)], check=False)
        shutil.rmtree(old_tree.parent, ignore_errors=True)


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", default=OLD_DEFAULT, help="the commit to compare with (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each tree, alternating")
    parser.add_argument("--profile-only", action="store_true", help="profile this tree; no side-by-side runs")
    parser.add_argument("--profile-child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def _header() -> None:
    import torch  # noqa: PLC0415

    cpu = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), "?")
    print(f"# CPU quick start: genomelm embed {INPUT} (default model, fp32)")
    print(
        f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, {cpu}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}, threads {torch.get_num_threads()}"
    )


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


# --------------------------------------------------------------------------- side by side


def _run_command(tree: Path, output: Path) -> dict[str, float]:
    """One `genomelm embed` process on tree's code: wall, user, sys seconds and peak RSS (MB) from wait4.

    It runs in output's folder and writes output's bare name: the command line recorded in the file's metadata is
    then the same for every tree, and the files can be compared byte for byte."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, "-m", "genomelm", "embed", str(HERE / INPUT), "-o", output.name]
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=output.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    stderr = process.stderr.read().decode() if process.stderr else ""
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{tree}: exit {process.returncode}\n{stderr}")
    return {"wall": wall, "user": usage.ru_utime, "sys": usage.ru_stime, "rss": usage.ru_maxrss / 1024}


def _side_by_side(trees: dict[str, Path], repeats: int) -> None:
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as scratch:
        outputs = {name: Path(scratch) / str(i) / "out.safetensors" for i, name in enumerate(trees)}
        for path in outputs.values():
            path.parent.mkdir()
        for _ in range(repeats):
            for name, tree in trees.items():
                runs[name].append(_run_command(tree, outputs[name]))
        same = len({path.read_bytes() for path in outputs.values()}) == 1
        difference = _embedding_difference(*outputs.values())
    print(f"\n## Side by side: {repeats} runs of each, alternating; median (min-max)\n")
    print("| tree | wall s | user s | sys s | peak RSS MB | kbp/s |")
    print("|---|---|---|---|---|---|")
    for name, samples in runs.items():
        cells = [_median_range([s[key] for s in samples]) for key in ("wall", "user", "sys", "rss")]
        rate = 48.502 / statistics.median(s["wall"] for s in samples)
        print(f"| {name} | " + " | ".join(cells) + f" | {rate:.1f} |")
    old_runs, new_runs = runs.values()
    old, new = (statistics.median(s["wall"] for s in samples) for samples in (old_runs, new_runs))
    paired = [o["wall"] / n["wall"] for o, n in zip(old_runs, new_runs)]  # neighbours in time share the noise
    cpu = [(o["user"] + o["sys"]) / (n["user"] + n["sys"]) for o, n in zip(old_runs, new_runs)]
    best = min(s["wall"] for s in old_runs) / min(s["wall"] for s in new_runs)
    print(
        f"\nspeed-up old / new: median wall {old / new:.2f}x; median of paired runs {statistics.median(paired):.2f}x "
        f"({min(paired):.2f}-{max(paired):.2f}); fastest run {best:.2f}x; CPU time (user + sys) "
        f"{statistics.median(cpu):.2f}x"
    )
    print(f"outputs byte-identical: {same}; {difference}")


def _embedding_difference(old: Path, new: Path) -> str:
    """How far the new embeddings are from the old ones, row by row."""
    import numpy as np  # noqa: PLC0415
    from safetensors.numpy import load_file  # noqa: PLC0415

    a, b = load_file(str(old)), load_file(str(new))
    same_rows = [bool(np.array_equal(x, y)) for x, y in zip(a["embeddings"], b["embeddings"])]
    scale = float(np.abs(a["embeddings"]).max())
    worst = float(np.abs(a["embeddings"].astype(np.float64) - b["embeddings"]).max())
    coords = all(np.array_equal(a[k], b[k]) for k in ("contig", "start", "end", "strand"))
    return (
        f"embedding rows bitwise equal: {same_rows}; max |difference| {worst:.2e} "
        f"({worst / scale:.1e} of the largest value); coordinates equal: {coords}"
    )


def _median_range(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


# --------------------------------------------------------------------------- profile


def _profile_tree(tree: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, str(Path(__file__).resolve()), "--profile-child"]
    done = subprocess.run(command, env=env, cwd=tree, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _usage() -> dict[str, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "wall": time.perf_counter(),
        "user": usage.ru_utime,
        "sys": usage.ru_stime,
        "faults": usage.ru_minflt,
        "rss": usage.ru_maxrss / 1024,
    }


def _profile_here() -> dict:
    """In this process, on the code PYTHONPATH names: phases of the quick start and the forward's operators."""
    marks = [("start", _usage())]
    import torch  # noqa: PLC0415
    from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415

    from genomelm.commands import embed  # noqa: PLC0415

    marks.append(("python imports (torch, genomelm)", _usage()))
    opts = embed.EmbedOptions(fasta=str(HERE / INPUT), output=os.devnull)
    embed.set_threads(opts.threads)
    device = embed.select_device(opts.device)
    model = embed.load_inference_model(opts.model, device, opts.conv_backend, opts.trust_checkpoint)
    marks.append(("model load", _usage()))
    with embed.FastaSource(opts.fasta) as fasta:
        windows = list(fasta.windows(32768, 32768, None))
    tokenizer = embed.CharTokenizer()
    ids = [tokenizer.encode(w.sequence) for w in windows]
    marks.append(("read + tokenise", _usage()))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        embed.embed_ids(model, ids, device, opts)
    marks.append(("forward (B=2 x 32,768, 4 layers) + pooling", _usage()))
    return {"phases": _phases(marks), "ops": _op_groups(prof), "threads": torch.get_num_threads()}


def _phases(marks) -> list[dict]:
    rows = []
    for (_, before), (name, after) in zip(marks, marks[1:]):
        row = {key: after[key] - before[key] for key in ("wall", "user", "sys", "faults")}
        rows.append({"phase": name, **row, "rss": after["rss"]})
    return rows


def _op_groups(prof) -> dict[str, float]:
    """Self CPU seconds of the forward by operator group (page faults land in the op that touches the memory)."""
    totals = {group: 0.0 for group in OP_GROUPS}
    totals["other"] = 0.0
    for event in prof.key_averages():
        group = next((g for g, names in OP_GROUPS.items() if event.key in names), "other")
        totals[group] += event.self_cpu_time_total / 1e6
    return totals


def _print_profiles(profiles: dict[str, dict]) -> None:
    names = list(profiles)
    print("\n## Where the time goes: phases (one in-process run per tree)\n")
    print("| phase | " + " | ".join(f"{n}: wall / user / sys s, minor faults, RSS MB" for n in names) + " |")
    print("|---|" + "---|" * len(names))
    for i, row in enumerate(next(iter(profiles.values()))["phases"]):
        cells = [_phase_cell(p["phases"][i]) for p in profiles.values()]
        print(f"| {row['phase']} | " + " | ".join(cells) + " |")
    print("\n## The forward by operator group: self CPU seconds (torch.profiler), share\n")
    print(
        "torch.profiler records the calling thread only: where the Hyena mix runs on kernels/fftconv_cpu.py's worker "
        "threads (2+ threads), its short convolution, FFTs and gates are missing from this table.\n"
    )
    print("| operators | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for group in next(iter(profiles.values()))["ops"]:
        cells = []
        for p in profiles.values():
            total = sum(p["ops"].values())
            cells.append(f"{p['ops'][group]:.2f} ({100 * p['ops'][group] / total:.0f}%)")
        print(f"| {group} | " + " | ".join(cells) + " |")
    totals = [f"{sum(p['ops'].values()):.2f}" for p in profiles.values()]
    print("| total | " + " | ".join(totals) + " |")


def _phase_cell(row: dict) -> str:
    return f"{row['wall']:.2f} / {row['user']:.2f} / {row['sys']:.2f}, {row['faults']:,.0f}, {row['rss']:.0f}"


if __name__ == "__main__":
    main()
