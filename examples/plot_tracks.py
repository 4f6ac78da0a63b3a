"""Draw the tracks of a `genomelm score-genome` store over a region (needs matplotlib: pip install genomelm[plot]).

    python examples/plot_tracks.py OUTDIR X:66763466-66765465 -o tracks.png --mark 66764465:TSS

Panels: the llr of changing each position to A, C, G, T (a heatmap; blue = the model finds the change
unlikely, blank at the reference base), the lowest llr of the 3 alternatives (``llr_min``) and the
surprise of the reference base (-log2 P, bits). Coordinates on the axis are 1-based, as in the region.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from genomelm.formats import genome_store as store
from genomelm.formats.fasta import parse_region
from genomelm.formats.tracks import TrackReader


def read(outdir: str, track: str, contig: str, start: int, end: int) -> np.ndarray:
    with TrackReader(store.track_file(outdir, track)) as reader:
        return reader.values(contig, start, end)


def plot(outdir: str, region: str, output: str, marks: list[tuple[int, str]], title: str | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    where = parse_region(region)  # 0-based half-open
    contig, start, end = where.contig, where.start, where.end
    llr = np.stack([read(outdir, f"llr_{b}", contig, start, end) for b in store.BASES])  # (4, L)
    llr[llr == 0] = np.nan  # the reference base: no change
    x = np.arange(start + 1, end + 1)  # 1-based positions
    fig, grid = plt.subplots(3, 2, figsize=(12, 5.5), width_ratios=[60, 1], height_ratios=[1.3, 1, 1])
    axes, side = grid[:, 0], grid[:, 1]
    for axis in axes[1:]:
        axis.sharex(axes[0])
    limit = np.nanpercentile(np.abs(llr), 99)
    image = axes[0].imshow(
        llr, aspect="auto", cmap="RdBu", vmin=-limit, vmax=limit, interpolation="nearest",
        extent=(x[0] - 0.5, x[-1] + 0.5, 3.5, -0.5),
    )  # fmt: skip
    axes[0].set_yticks(range(4), [f"to {b}" for b in store.BASES])
    fig.colorbar(image, cax=side[0], label="llr (nats)")
    side[1].axis("off")
    side[2].axis("off")
    axes[1].plot(x, read(outdir, "llr_min", contig, start, end), lw=0.6, color="tab:red")
    axes[1].set_ylabel("llr_min (nats)")
    axes[2].plot(x, read(outdir, "surprise", contig, start, end), lw=0.6, color="tab:gray")
    axes[2].set_ylabel("surprise (bits)")
    axes[2].set_xlabel(f"{contig} (1-based)")
    axes[2].xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:,.0f}"))
    for pos, label in marks:
        for axis in axes:
            axis.axvline(pos, color="black", lw=0.8, ls="--")
        axes[0].text(pos, -0.6, label, ha="center", va="bottom", fontsize=9)
    fig.suptitle(title or f"genomelm score-genome: {os.path.basename(os.path.normpath(outdir))}, {region}")
    fig.tight_layout()
    fig.savefig(output, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outdir", help="a score-genome store")
    parser.add_argument("region", help="chr:start-end, 1-based inclusive (a few kb at most)")
    parser.add_argument("-o", "--output", default="tracks.png")
    parser.add_argument("--mark", action="append", default=[], help="POS:LABEL, 1-based (repeatable)")
    parser.add_argument("--title", default=None)
    args = parser.parse_args()
    marks = [(int(m.split(":", 1)[0]), m.split(":", 1)[1] if ":" in m else "") for m in args.mark]
    plot(args.outdir, args.region, args.output, marks, args.title)


if __name__ == "__main__":
    main()
