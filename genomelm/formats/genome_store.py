"""The directory `genomelm score-genome` writes: bigWig tracks, a calibration table, manifest.json.

Layout of a finished store (OUTDIR)::

    manifest.json            format, model (name, SHA-256), settings, contigs and lengths, provenance
    llr_A.bw ... llr_T.bw    llr of changing each position to that base, mean of both strands (0 at REF)
    llr_min.bw               the most damaging (lowest) llr of the 3 alternative bases
    surprise.bw              -log2 P(reference base), mean of both strands
    lookup/0000000.npy ...   per track contig, (length, 6) float32 memory-mappable rows: the mean and
                             forward-strand llr of the 3 SNVs of each position (genomelm.formats.lookup_store),
                             what `score-variants --precomputed` reads (the reverse strand's llr is
                             2 * mean - forward)
    calibration.npz          the llr distribution of every scored SNV (see genomelm.variants.calibration)

The bigWig tracks are for genome browsers; lookups read only the arrays. Format version 2 (version 1
also had llr_fwd_*.bw tracks, read by lookups, and no arrays).

While a run works, everything lives in the sibling directory ``OUTDIR.partial/`` (a journal, the
finished segments of scores, the tracks being written); the run ends by renaming it to OUTDIR, so
OUTDIR never exists half-written. Segments are the unit of resumption: ``--resume`` keeps them and
computes the rest.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile

import numpy as np

from genomelm.errors import FormatError, InputError
from genomelm.formats import atomic

FORMAT = "genomelm-genome-scores"
FORMAT_VERSION = 3  # 3: lookup arrays of partly scored contigs cover their spans only (lookup_store)
READABLE_VERSIONS = (2, 3)  # a version 2 store is a version 3 store whose lookup arrays cover whole contigs
BASES = "ACGT"
MEAN_TRACKS = tuple(f"llr_{b}" for b in BASES)
TRACKS = (*MEAN_TRACKS, "llr_min", "surprise")
MANIFEST, JOURNAL, CALIBRATION = "manifest.json", "journal.json", "calibration.npz"
SEGMENTS, TRACK_DIR = "segments", "tracks"


def track_file(directory: str, track: str) -> str:
    return os.path.join(directory, f"{track}.bw")


def partial_dir(outdir: str) -> str:
    """Where a run on ``outdir`` works until it is complete."""
    return os.path.normpath(outdir) + ".partial"


@contextlib.contextmanager
def _replacing(path: str, suffix: str, mode: str):
    """A handle on a temporary file beside ``path``, with the permissions a plain open() would give it,
    renamed onto ``path`` when the block succeeds and removed when it fails (a full disk, a signal)."""
    fd, temp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-", suffix=suffix)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)
        with os.fdopen(fd, mode) as handle:
            yield handle
        os.replace(temp, path)
    except BaseException:
        atomic.discard(temp)
        raise


def write_json(path: str, data: dict) -> None:
    """Write JSON through a temporary file and a rename (never a half-written file)."""
    with _replacing(path, ".json", "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")


def read_json(path: str, what: str) -> dict:
    try:
        with open(path) as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise InputError(f"{what} not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise FormatError(f"{path}: unreadable {what} ({exc})") from None


def read_manifest(outdir: str) -> dict:
    """The manifest of a finished store; InputError when ``outdir`` is not one."""
    if not os.path.isdir(outdir):
        raise InputError(f"score store not found: {outdir} (a directory written by `genomelm score-genome`)")
    path = os.path.join(outdir, MANIFEST)
    if not os.path.isfile(path):
        hint = " (an unfinished run: continue it with --resume)" if os.path.isdir(partial_dir(outdir)) else ""
        raise InputError(f"{outdir}: no {MANIFEST}, not a finished score-genome store{hint}")
    manifest = read_json(path, "score store manifest")
    if manifest.get("format") != FORMAT:
        raise FormatError(f"{path}: not a {FORMAT} manifest")
    version = manifest.get("format_version")
    if version not in READABLE_VERSIONS:
        raise FormatError(
            f"{outdir}: a score-genome store of format version {version}, this genomelm reads versions "
            f"{READABLE_VERSIONS[0]}-{FORMAT_VERSION}: run `genomelm score-genome` again (or use the genomelm that "
            "wrote it)"
        )
    return manifest


# --------------------------------------------------------------------------- segments


def save_arrays(path: str, arrays: dict[str, np.ndarray], compress: bool = False) -> None:
    """Save named arrays as .npz, atomically (temporary file, then rename); ``compress``: zip deflate."""
    with _replacing(path, ".npz", "wb") as handle:
        (np.savez_compressed if compress else np.savez)(handle, **arrays)


def load_arrays(path: str, what: str = "arrays") -> dict[str, np.ndarray]:
    try:
        with np.load(path) as data:
            return {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise InputError(f"{what} not found: {path}") from None
    except (OSError, ValueError, KeyError) as exc:
        raise FormatError(f"{path}: unreadable {what} ({exc})") from None


def segment_path(directory: str, contig_index: int, first_block: int) -> str:
    """A segment is named by where it starts: contig index and first llr block."""
    return os.path.join(directory, f"{contig_index:07d}_{first_block:012d}")


def write_segment(directory: str, contig_index: int, blocks: tuple[int, int], start: int, arrays: dict) -> None:
    """Save one segment: llr blocks [first, end) of a contig, whose first position is ``start``
    (0-based), with its arrays. A directory of .npy files (readers map just the arrays they need,
    no checksum pass), written under a temporary name and renamed: it appears complete or not at all."""
    path = segment_path(directory, contig_index, blocks[0])
    temp = tempfile.mkdtemp(dir=directory, prefix=".tmp-")
    named = {"blocks": np.array(blocks, dtype=np.int64), "start": np.array(start, dtype=np.int64), **arrays}
    try:
        for key, array in named.items():
            np.save(os.path.join(temp, f"{key}.npy"), array)
        os.rename(temp, path)
    except BaseException:
        atomic.discard(temp)
        raise


class Segment:
    """The arrays of a saved segment, each memory-mapped when first asked for."""

    def __init__(self, path: str):
        self.path = path
        self._arrays: dict[str, np.ndarray] = {}

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._arrays:
            self._arrays[key] = np.load(os.path.join(self.path, f"{key}.npy"), mmap_mode="r")
        return self._arrays[key]


def segment_blocks(path: str) -> tuple[int, int]:
    """[first, end) llr blocks of a saved segment."""
    first, end = Segment(path)["blocks"].tolist()
    return first, end
