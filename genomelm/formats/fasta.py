"""Open any FASTA (plain, gzip, BGZF), tile it into windows, parse regions.

Coordinates: every ``Region``, ``Window`` and ``fetch`` argument is 0-based half-open (BED style).
Only the text forms typed by people (``chr1:100-200``, samtools style) are 1-based inclusive;
``parse_region`` converts them and ``str(region)`` converts back.

Random access goes through pyfaidx when the file is indexable: plain text with lines of one
length, or BGZF named ``*.gz``/``*.bgz``. Anything else (plain gzip, ragged lines, an index that
cannot be built) is read sequentially, in blocks, with a rolling buffer: memory stays bounded by
about ``window + stride`` characters plus one read block, whatever the chromosome length.
"""

from __future__ import annotations

import codecs
import gzip
import io
import os
import re
import shutil
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field

from genomelm.errors import FormatError, InputError, UsageError
from genomelm.log import get_logger

_log = get_logger(__name__)

_READ_BLOCK = 1 << 20  # characters per read in streaming mode
_FETCH_CHUNK = 1 << 20  # characters per pyfaidx fetch while tiling an indexed file
_SNIFF_BYTES = 1 << 16  # decompressed bytes checked when a file is opened
# The empty block every BGZF file ends with (SAM spec 4.1.2); its absence means truncation.
_BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
_OTHER_COMPRESSION = {
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"PK\x03\x04": "zip",
}


# --------------------------------------------------------------------------- regions


@dataclass(frozen=True)
class Region:
    """A stretch of one contig, 0-based half-open: [start, end); ``end=None`` runs to the contig end."""

    contig: str
    start: int
    end: int | None
    name: str | None = None

    def __post_init__(self) -> None:
        if not self.contig:
            raise UsageError("region has an empty contig name")
        if self.start < 0 or (self.end is not None and self.end < self.start):
            raise UsageError(f"invalid region {self.contig} [{self.start}, {self.end}) (0-based half-open)")

    def __str__(self) -> str:
        """samtools style, 1-based inclusive: 'chr1', 'chr1:100-200', 'chr1:100-' (to the end)."""
        contig = f"{{{self.contig}}}" if ":" in self.contig else self.contig
        if self.start == 0 and self.end is None:
            return contig
        return f"{contig}:{self.start + 1}-{'' if self.end is None else self.end}"


@dataclass(frozen=True)
class Window:
    """One tile of sequence: [start, end) 0-based half-open on ``contig``.

    ``contig_index`` is the contig's position in ``FastaSource.contig_names`` (file order).
    ``sequence`` holds the characters as in the file: case kept, no newlines.
    """

    contig_index: int
    contig: str
    start: int
    end: int
    sequence: str


_COORDS_RE = re.compile(r"^(?P<start>\d[\d,]*)(?:-(?P<end>\d[\d,]*)?)?$")


def parse_region(text: str) -> Region:
    """Parse a samtools-style region (1-based inclusive) into a 0-based half-open ``Region``.

    'chr1' -> whole contig; 'chr1:100-200' -> Region('chr1', 99, 200); 'chr1:100' and 'chr1:100-'
    -> from base 100 to the end; commas allowed ('1:1,000-2,000'). A contig name that contains ':'
    is written in braces: '{HLA-A*01:01}:1-100'. Malformed text raises UsageError.
    """
    spec = text.strip()
    if spec.startswith("{"):
        contig, coords = _split_braced(spec)
    else:
        contig, sep, coords = spec.rpartition(":")
        if not sep:
            contig, coords = spec, ""
    if not contig:
        raise UsageError(f"region {text!r} has no contig name")
    return _region_from_coords(contig, coords, text)


def _split_braced(spec: str) -> tuple[str, str]:
    """'{name:with:colons}:1-9' -> ('name:with:colons', '1-9')."""
    close = spec.find("}")
    rest = spec[close + 1 :]
    if close < 0 or (rest and not rest.startswith(":")):
        raise UsageError(f"malformed region {spec!r}: expected '{{contig}}' or '{{contig}}:start-end'")
    return spec[1:close], rest[1:]


def _region_from_coords(contig: str, coords: str, text: str) -> Region:
    """Turn 1-based inclusive 'start-end' text into a 0-based half-open Region."""
    if not coords:
        return Region(contig, 0, None)
    match = _COORDS_RE.match(coords)
    if match is None:
        raise UsageError(f"malformed region {text!r}: expected contig, contig:start or contig:start-end")
    start = int(match["start"].replace(",", ""))
    end = int(match["end"].replace(",", "")) if match["end"] else None
    if start < 1:
        raise UsageError(f"region {text!r}: start must be >= 1 (coordinates are 1-based)")
    if end is not None and end < start:
        raise UsageError(f"region {text!r}: end is before start")
    return Region(contig, start - 1, end)


def read_bed(path: str | os.PathLike) -> list[Region]:
    """Read BED regions (0-based half-open, as in the file); plain or gzip.

    Blank, '#', 'track' and 'browser' lines are skipped; column 4, when present and not '.',
    becomes ``Region.name``. A malformed line raises FormatError naming ``file:line``.
    """
    regions = []
    with _open_text(str(path), what="BED file") as handle:
        for lineno, line in enumerate(_decoded_lines(handle, path), 1):
            fields = _bed_fields(line)
            if fields is not None:
                regions.append(_bed_region(fields, f"{path}:{lineno}"))
    return regions


def _decoded_lines(handle: io.TextIOBase, path: str | os.PathLike) -> Iterator[str]:
    """Lines of a text file, with decoding and gzip errors turned into FormatError."""
    try:
        yield from handle
    except (UnicodeDecodeError, EOFError, OSError, zlib.error) as exc:
        raise FormatError(f"{path}: not a readable text file ({exc})") from None


def _bed_fields(line: str) -> list[str] | None:
    """The columns of one BED line, or None for lines that carry no region."""
    line = line.rstrip("\r\n")
    if not line.strip() or line.startswith(("#", "track", "browser")):
        return None
    # BED is tab-separated, but space-separated files are common enough to accept.
    return line.split("\t") if "\t" in line else line.split()


def _bed_region(fields: list[str], where: str) -> Region:
    """One BED line's columns -> Region; ``where`` is 'file:line' for the error message."""
    if len(fields) < 3:
        raise FormatError(f"{where}: expected at least 3 columns (chrom, start, end), found {len(fields)}")
    try:
        start, end = int(fields[1]), int(fields[2])
    except ValueError:
        raise FormatError(f"{where}: start and end must be integers, got {fields[1]!r}, {fields[2]!r}") from None
    if not fields[0] or start < 0 or end < start:
        raise FormatError(f"{where}: invalid interval {fields[0]!r} [{start}, {end}) (BED is 0-based half-open)")
    name = fields[3] if len(fields) > 3 and fields[3] not in ("", ".") else None
    return Region(fields[0], start, end, name)


def parse_regions(spec: str) -> list[Region]:
    """A BED file path (if ``spec`` names an existing file) or one samtools-style region (1-based)."""
    if os.path.isfile(spec):
        return read_bed(spec)
    if spec.lower().endswith((".bed", ".bed.gz")):
        raise InputError(f"BED file not found: {spec}")
    return [parse_region(spec)]


def resolve_contig(name: str, available: Iterable[str]) -> str | None:
    """The name in ``available`` that means contig ``name``: exact, else 'chr' added or removed,
    else the mitochondrion spelled another way (chrM, chrMT, MT, M); None when nothing matches."""
    names = set(available)
    if name in names:
        return name
    bare = name[3:] if name.lower().startswith("chr") else name
    candidates = [bare, f"chr{bare}"]
    if bare.upper() in ("M", "MT"):
        candidates += ["chrM", "MT", "M", "chrMT"]
    return next((c for c in candidates if c in names), None)


# --------------------------------------------------------------------------- tiling


class _Tiler:
    """Cuts the windows of one region out of sequence fed in consecutive pieces.

    Windows start at region start, start + stride, ...; each is [s, min(s + window, end)); tiling
    stops after the first window that reaches the region end. Only the part of the sequence not yet
    covered by a finished window is kept, so memory is about window + one piece.
    """

    def __init__(self, index: int, contig: str, start: int, end: int | None, window: int, stride: int):
        self.index, self.contig, self.end = index, contig, end
        self.window, self.stride = window, stride
        self.next_start = start
        self._pieces: list[str] = []
        self._buf_start = self._buf_end = start  # the buffer holds [buf_start, buf_end)
        self._last_end = -1
        self.done = end is not None and end <= start

    def feed(self, pos: int, text: str) -> list[Window]:
        """Add ``text``, whose first character is at 0-based ``pos``; return the windows now complete."""
        lo = max(pos, self._buf_end)
        hi = pos + len(text) if self.end is None else min(pos + len(text), self.end)
        if hi > lo and not self.done:
            self._pieces.append(text[lo - pos : hi - pos])
            self._buf_end = hi
        return self._emit(final=self._buf_end == self.end)

    def finish(self, length: int) -> list[Window]:
        """The contig ended at ``length``: emit the last, possibly shorter, window."""
        if self.end is None:
            self.end = length
            # A full-size window may already have ended exactly at the contig end.
            self.done = self.done or self._last_end == length
        return self._emit(final=True)

    def _ready(self, final: bool) -> bool:
        if self.done or self.next_start >= self._buf_end:
            return False
        return final or self.next_start + self.window <= self._buf_end

    def _emit(self, final: bool) -> list[Window]:
        out = []
        while self._ready(final):
            start, end = self.next_start, min(self.next_start + self.window, self._buf_end)
            out.append(Window(self.index, self.contig, start, end, self._slice(start, end)))
            self._last_end = end
            self.done = end == self.end
            self.next_start += self.stride
        if out:
            self._trim()
        return out

    def _slice(self, start: int, end: int) -> str:
        if len(self._pieces) > 1:  # join lazily: once per batch of windows, not once per piece
            self._pieces = ["".join(self._pieces)]
        return self._pieces[0][start - self._buf_start : end - self._buf_start]

    def _trim(self) -> None:
        """Drop what no future window needs (with stride > window, skip ahead past a gap)."""
        keep_from = min(self.next_start, self._buf_end)
        self._pieces = [self._pieces[0][keep_from - self._buf_start :]]
        self._buf_start = keep_from
        if self.next_start > self._buf_end:
            self._buf_start = self._buf_end = self.next_start


def _check_tiling(window: int, stride: int) -> None:
    if window < 1 or stride < 1:
        raise UsageError(f"window and stride must be >= 1 (got window={window}, stride={stride})")


# --------------------------------------------------------------------------- opening and checks


def sniff_compression(path: str) -> str:
    """'plain', 'gzip' or 'bgzf', from the magic bytes (not the file name)."""
    with open(path, "rb") as handle:
        head = handle.read(18)
    for magic, kind in _OTHER_COMPRESSION.items():
        if head.startswith(magic):
            raise FormatError(f"{path}: {kind}-compressed; only plain, gzip and BGZF files are supported")
    if not head.startswith(b"\x1f\x8b"):
        return "plain"
    # BGZF = gzip with the FEXTRA flag and a 'BC' extra subfield right after XLEN.
    return "bgzf" if len(head) >= 14 and head[3] & 4 and head[12:14] == b"BC" else "gzip"


def _open_binary(path: str, compression: str) -> io.BufferedIOBase:
    raw = open(path, "rb")
    # BGZF is a series of gzip members: the gzip module reads it sequentially as it is.
    return raw if compression == "plain" else gzip.GzipFile(fileobj=raw, mode="rb")


def _open_text(path: str, what: str = "FASTA") -> io.TextIOWrapper:
    """Text handle on a plain or gzip file; universal newlines strip '\\r'. Missing -> InputError."""
    _check_readable(path, what)
    compression = "plain" if sniff_compression(path) == "plain" else "gzip"
    return io.TextIOWrapper(_open_binary(path, compression), encoding="utf-8", newline=None)


def _check_readable(path: str, what: str) -> None:
    if not os.path.exists(path):
        raise InputError(f"{what} not found: {path}")
    if os.path.isdir(path):
        raise InputError(f"{what} is a directory, not a file: {path}")
    if not os.access(path, os.R_OK):
        raise InputError(f"{what} is not readable (permission denied): {path}")


def _read_head(path: str, compression: str) -> bytes:
    """The first decompressed bytes; a truncated or corrupt gzip raises FormatError."""
    if compression == "plain":
        with open(path, "rb") as handle:
            return handle.read(_SNIFF_BYTES)
    if compression == "bgzf":
        _check_bgzf_eof(path)
    try:
        with _open_binary(path, compression) as handle:
            return handle.read(_SNIFF_BYTES)
    except (EOFError, OSError, zlib.error) as exc:
        raise FormatError(f"{path}: truncated or corrupt gzip file ({exc})") from None


def _check_bgzf_eof(path: str) -> None:
    with open(path, "rb") as handle:
        handle.seek(max(0, os.path.getsize(path) - len(_BGZF_EOF)))
        if handle.read() != _BGZF_EOF:
            raise FormatError(f"{path}: truncated BGZF file (no end-of-file marker)")


def _check_head(path: str, head: bytes) -> None:
    """Reject what is plainly not FASTA: empty, binary, or not starting with a '>' header."""
    if not head.strip():
        raise FormatError(f"{path}: empty FASTA file")
    try:
        # final=False: the sample may end in the middle of a multi-byte character.
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        raise FormatError(f"{path}: binary data, not a FASTA text file") from None
    if "\x00" in text:
        raise FormatError(f"{path}: binary data (NUL bytes), not a FASTA text file")
    if not text.lstrip().startswith(">"):
        raise FormatError(f"{path}: not FASTA: the first line is not a '>' header")
    if re.search("\r(?!\n)", text.rstrip("\r")):
        # The index (faidx) would read the whole file as one header line: contigs would vanish silently.
        raise FormatError(
            f"{path}: old Mac line endings (CR only); convert them first, e.g. `tr '\\r' '\\n' < in.fa > out.fa`"
        )


# --------------------------------------------------------------------------- indexing (pyfaidx)


class _NotIndexable(Exception):
    """The file is valid FASTA but pyfaidx cannot index it (e.g. lines of varying length)."""


_UNINDEXABLE = {
    "gzip": "plain gzip, not BGZF (compress with bgzip for random access)",
    "bgzf": "BGZF without a .gz/.bgz name (rename it for random access)",
    "plain": "uncompressed, but named like a compressed file",
}


def _indexable_by_pyfaidx(path: str, compression: str) -> bool:
    # pyfaidx picks its reader from the file name, so the name must agree with the content.
    compressed_name = path.lower().endswith((".gz", ".bgz"))
    if compression == "bgzf":
        return compressed_name
    return compression == "plain" and not path.lower().endswith((".gz", ".bgz", ".bz2", ".zip"))


def _index_is_current(path: str, compression: str) -> bool:
    """The .fai (and .gzi for BGZF) exist and are not older than the FASTA."""
    needed = [path + ".fai"] + ([path + ".gzi"] if compression == "bgzf" else [])
    mtime = os.path.getmtime(path)
    return all(os.path.exists(p) and os.path.getmtime(p) >= mtime for p in needed)


def _faidx(path: str, fai: str, gzi: str):
    """pyfaidx.Faidx on ``path`` with the given index paths; pyfaidx errors -> ours."""
    from pyfaidx import Faidx, FastaIndexingError

    try:
        return Faidx(path, indexname=fai, gzi_indexname=gzi, as_raw=True, one_based_attributes=False)
    except FastaIndexingError as exc:
        if "not consistent" in str(exc):
            raise _NotIndexable("lines of varying length") from None
        raise FormatError(f"{path}: {exc}") from None
    except UnicodeDecodeError:
        raise FormatError(f"{path}: binary data, not a FASTA text file") from None
    except ValueError as exc:  # pyfaidx reports duplicate names as ValueError('Duplicate key "x"')
        raise FormatError(f"{path}: {str(exc).replace('key', 'contig name')}") from None


def _faidx_private(path: str, compression: str):
    """Build the index in a private temporary directory, then publish it next to the FASTA if allowed.

    Building aside and renaming means a read-only directory never stops us, and concurrent jobs
    never read a half-written .fai.
    """
    tmp = tempfile.mkdtemp(prefix="genomelm-faidx-")
    try:
        fai, gzi = os.path.join(tmp, "index.fai"), os.path.join(tmp, "index.gzi")
        faidx = _faidx(path, fai, gzi)
        _publish(fai, path + ".fai")
        if compression == "bgzf":
            _publish(gzi, path + ".gzi")
        return faidx
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _publish(src: str, dst: str) -> None:
    """Copy an index file into place atomically; quietly keep it private if that is not allowed."""
    partial = f"{dst}.{os.getpid()}.partial"
    try:
        shutil.copyfile(src, partial)
        os.replace(partial, dst)
    except OSError as exc:
        _log.debug("could not write %s (%s); index kept in memory", dst, exc.strerror)
        if os.path.exists(partial):
            os.unlink(partial)


def _open_index(path: str, compression: str):
    """A pyfaidx.Faidx, or None when the file must be streamed (reason logged)."""
    if not _indexable_by_pyfaidx(path, compression):
        _log.info("%s: %s: reading it sequentially", path, _UNINDEXABLE[compression])
        return None
    try:
        if _index_is_current(path, compression):
            try:
                return _faidx(path, path + ".fai", path + ".gzi")
            except OSError:
                pass  # e.g. pyfaidx decided to rebuild and the directory is read-only
            except FormatError as exc:  # a malformed .fai/.gzi: rebuilt, never trusted
                _log.warning("%s.fai cannot be used (%s); indexing the FASTA privately instead", path, exc)
        return _faidx_private(path, compression)
    except (_NotIndexable, OSError) as exc:
        _log.info("%s cannot be indexed (%s): reading it sequentially", path, exc)
    return None


# --------------------------------------------------------------------------- streaming parser

_HEADER, _SEQ = "header", "seq"


def _parse_blocks(blocks: Iterable[str]) -> Iterator[tuple[str, str]]:
    """FASTA events from text blocks of any size: (_HEADER, header line without '>') and
    (_SEQ, sequence text with line breaks removed). One _SEQ event per block, not per line,
    so the cost does not depend on the line length."""
    header: list[str] | None = None  # pieces of a header line that spans blocks
    at_line_start = True
    for block in blocks:
        i = 0
        while i < len(block):
            if header is not None:
                j = block.find("\n", i)
                header.append(block[i:] if j < 0 else block[i:j])
                if j < 0:
                    break
                yield _HEADER, "".join(header)
                header, i, at_line_start = None, j + 1, True
            elif at_line_start and block[i] == ">":
                header, i = [], i + 1
            else:
                j = block.find("\n>", i)
                stop = len(block) if j < 0 else j + 1
                sequence = block[i:stop].replace("\n", "")
                if sequence:
                    yield _SEQ, sequence
                at_line_start, i = block[stop - 1] == "\n", stop
    if header is not None:
        yield _HEADER, "".join(header)


def _contig_name(header: str, path: str) -> str:
    """The contig name is the first word of the header line."""
    words = header.split()
    if not words:
        raise FormatError(f"{path}: a '>' header line has no sequence name")
    return words[0]


class _Record:
    """One FASTA record during a streaming pass: its length so far and the tilers reading it."""

    def __init__(self, index: int, name: str, regions: list[Region], window: int, stride: int):
        self.index, self.name, self.regions, self.length = index, name, regions, 0
        self.tilers = [_Tiler(index, name, r.start, r.end, window, stride) for r in regions]

    @property
    def done(self) -> bool:
        return all(tiler.done for tiler in self.tilers)

    def feed(self, text: str) -> list[Window]:
        out = [w for tiler in self.tilers if not tiler.done for w in tiler.feed(self.length, text)]
        self.length += len(text)
        return out


@dataclass
class _Pass:
    """What one streaming pass is asked for and has seen so far."""

    window: int
    stride: int
    pending: dict[str, list[Region]] | None  # regions of contigs not reached yet; None = every contig
    count_only: bool = False  # only measure contigs (no windows)
    lengths: dict[str, int] = field(default_factory=dict)  # contigs read so far, file order

    @property
    def satisfied(self) -> bool:
        """Every requested contig has been reached: the rest of the file is not needed."""
        return self.pending is not None and not self.pending

    def regions_for(self, name: str) -> list[Region]:
        if self.count_only:
            return []
        return [Region(name, 0, None)] if self.pending is None else self.pending.pop(name, [])


# --------------------------------------------------------------------------- the source


class FastaSource:
    """A FASTA file (plain, gzip or BGZF), random access when indexable, streamed otherwise.

    All coordinates are 0-based half-open. ``indexed`` says whether random access works;
    ``contig_names`` lists contigs in file order (in streaming mode, as far as read so far).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        _check_readable(self.path, "FASTA")
        self._compression = sniff_compression(self.path)
        _check_head(self.path, _read_head(self.path, self._compression))
        self._faidx = _open_index(self.path, self._compression)
        self.indexed = self._faidx is not None
        self._lengths: dict[str, int] | None = None
        self.contig_names: list[str] = []
        if self._faidx is not None:
            self._lengths = {name: rec.rlen for name, rec in self._faidx.index.items()}
            self.contig_names = list(self._lengths)
        self._index_of = {name: i for i, name in enumerate(self.contig_names)}

    # -- public API

    def contig_lengths(self) -> dict[str, int]:
        """Contig name -> length, in file order. Indexed: from the index. Streaming: one full read
        of the file the first time (decompression included), cached afterwards."""
        if self._lengths is None:
            with closing(self._stream(1, 1, None, count_only=True)) as stream:
                for _ in stream:
                    pass
        return dict(self._lengths)

    def fetch(self, contig: str, start: int, end: int) -> str:
        """The sequence of [start, end), 0-based half-open, case kept. Streaming mode scans the file."""
        region = Region(contig, start, end)
        if not self.indexed:
            windows = list(self._stream(max(end - start, 1), max(end - start, 1), [region]))
            return windows[0].sequence if windows else ""
        self._resolve(region)
        return self._faidx.fetch(contig, start + 1, end) if end > start else ""

    def windows(self, window: int, stride: int, regions: list[Region] | None = None) -> Iterator[Window]:
        """Tile each region (default: every contig, file order) into [s, min(s + window, end)) windows,
        s = start, start + stride, ... up to the first window that reaches the region end
        (0-based half-open). Indexed: regions in the given order, all checked by this call.
        Streaming: one pass in contig file order, regions sorted by start within a contig; a region
        error (unknown contig, out of bounds) is raised when the pass discovers it, or by this call
        once ``contig_lengths()`` has read the file; windows of overlapping regions interleave as
        they complete."""
        _check_tiling(window, stride)
        if regions is not None and self._lengths is not None:
            for region in regions:
                self._resolve(region)  # contigs and lengths known: fail now, before any work
        if self.indexed:
            return self._indexed_windows(window, stride, self._whole_contigs() if regions is None else regions)
        return self._stream(window, stride, regions)

    def close(self) -> None:
        if self._faidx is not None:
            self._faidx.close()

    def __enter__(self) -> FastaSource:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "indexed" if self.indexed else "streaming"
        return f"FastaSource({self.path!r}, {self._compression}, {mode})"

    # -- region checks

    def _resolve(self, region: Region) -> tuple[int, int]:
        """(start, end) of ``region`` with end filled in; InputError if it is not inside the FASTA."""
        length = self._lengths.get(region.contig) if self._lengths is not None else None
        if length is None:
            raise InputError(_unknown_contig_message(region.contig, self.contig_names, self.path))
        return region.start, _check_span(region, length, self.path)

    # -- indexed path

    def _indexed_windows(self, window: int, stride: int, regions: list[Region]) -> Iterator[Window]:
        for region in regions:
            contig, (start, end) = region.contig, self._resolve(region)
            tiler = _Tiler(self._index_of[contig], contig, start, end, window, stride)
            chunk = max(_FETCH_CHUNK, window)
            for pos in range(start, end, chunk):
                yield from tiler.feed(pos, self._faidx.fetch(contig, pos + 1, min(pos + chunk, end)))
                if tiler.done:
                    break

    def _whole_contigs(self) -> list[Region]:
        regions = []
        for name, length in self._lengths.items():
            if length == 0:
                _log.warning("%s: contig %s has no sequence; no windows from it", self.path, name)
            else:
                regions.append(Region(name, 0, None))
        return regions

    # -- streaming path

    def _stream(
        self, window: int, stride: int, regions: list[Region] | None, count_only: bool = False
    ) -> Iterator[Window]:
        """One sequential pass. ``regions=None``: every contig; ``count_only``: lengths, no windows."""
        state = _Pass(window, stride, None if regions is None else _group_by_contig(regions), count_only)
        record = None
        with closing(self._events()) as events:
            for kind, value in events:
                if kind == _SEQ:
                    yield from self._feed(record, value)
                    if record is not None and record.done and state.satisfied:
                        return  # the last requested region is complete: stop reading
                    continue
                if record is not None:
                    yield from self._end_record(record, state)
                if state.satisfied:
                    return
                record = self._begin_record(_contig_name(value, self.path), state)
        if record is not None:
            yield from self._end_record(record, state)
        self._lengths = state.lengths  # a complete pass: now every contig and length is known
        if state.pending:
            raise InputError(_unknown_contig_message(next(iter(state.pending)), self.contig_names, self.path))

    def _feed(self, record: _Record | None, text: str) -> list[Window]:
        if record is None:  # text before the first header
            if text.strip():
                raise FormatError(f"{self.path}: sequence data before the first '>' header")
            return []
        return record.feed(text)

    def _begin_record(self, name: str, state: _Pass) -> _Record:
        if name in state.lengths:
            raise FormatError(f"{self.path}: duplicate contig name {name!r}")
        state.lengths[name] = 0
        if name not in self._index_of:
            self._index_of[name] = len(self.contig_names)
            self.contig_names.append(name)
        return _Record(self._index_of[name], name, state.regions_for(name), state.window, state.stride)

    def _end_record(self, record: _Record, state: _Pass) -> list[Window]:
        state.lengths[record.name] = record.length
        if state.pending is None:  # whole contigs: nothing to check, but say why one gives nothing
            if record.length == 0 and not state.count_only:
                _log.warning("%s: contig %s has no sequence; no windows from it", self.path, record.name)
        else:
            for region in record.regions:
                _check_span(region, record.length, self.path)
        return [w for tiler in record.tilers for w in tiler.finish(record.length)]

    def _events(self) -> Iterator[tuple[str, str]]:
        return _parse_blocks(self._text_blocks())

    def _text_blocks(self) -> Iterator[str]:
        """The decompressed text in blocks of ~1M characters, '\\r' removed; bad data -> FormatError."""
        with _open_text(self.path) as handle:
            while True:
                try:
                    block = handle.read(_READ_BLOCK)
                except UnicodeDecodeError:
                    raise FormatError(f"{self.path}: binary data, not a FASTA text file") from None
                except (EOFError, OSError, zlib.error) as exc:
                    raise FormatError(f"{self.path}: truncated or corrupt gzip data ({exc})") from None
                if not block:
                    return
                if "\x00" in block:
                    raise FormatError(f"{self.path}: binary data (NUL bytes), not a FASTA text file")
                yield block


def _group_by_contig(regions: list[Region]) -> dict[str, list[Region]]:
    """Regions per contig, sorted by start (the order in which a single pass can serve them)."""
    groups: dict[str, list[Region]] = {}
    for region in sorted(regions, key=lambda r: r.start):
        groups.setdefault(region.contig, []).append(region)
    return groups


def _check_span(region: Region, length: int, path: str) -> int:
    """The region's 0-based exclusive end (None -> ``length``); InputError unless it lies inside
    [0, length). A zero-length region is allowed anywhere up to the contig end."""
    end = length if region.end is None else region.end
    if end > length or region.start > length or (region.start == length and region.end is None):
        raise InputError(f"region {region} is outside contig {region.contig} (length {length}) in {path}")
    return end


def _unknown_contig_message(name: str, names: list[str], path: str) -> str:
    shown = ", ".join(names[:5]) + (f", ... ({len(names)} in all)" if len(names) > 5 else "")
    message = f"contig '{name}' not in FASTA {path} (contigs: {shown or 'none'})"
    alias = resolve_contig(name, names)
    return f"{message}; did you mean '{alias}'?" if alias else message
