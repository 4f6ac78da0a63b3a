"""VCF/BCF in and out through pysam (htslib): plain, bgzip, BCF, '-' for stdin/stdout.

Coordinates: a pysam record's ``start`` is 0-based (``pos`` is the 1-based VCF POS); every
``Region`` here is 0-based half-open, as in ``genomelm.formats.fasta``.

Records are passed through untouched apart from the INFO keys a command sets (DESIGN.md §7):
text output (.vcf, .vcf.gz, '-') is each record as htslib formats it, so nothing is re-ordered or
dropped. htslib re-renders numbers it parsed (a float kept as float32 is printed with 6
significant digits), exactly as bcftools does. BCF output is that same text converted by htslib's
VCF parser and BCF writer (`bcftools view -Ob`), so it carries the same records and values (INFO/END
as written, never recomputed). Its header is written after the records, so it declares the contigs and
keys htslib added for records that use them undeclared (and INFO/END, which BCF stores typed).
Bytes that are not UTF-8 pass through unchanged.

No torch here (layer rule): this module only reads and writes variant files.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import resource
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TextIO

import pysam
import pysam.bcftools  # the bundled bcftools: the one way pysam builds a BCF index
import pysam.libcutils
import pysam.utils

from genomelm.errors import FormatError, InputError, UsageError
from genomelm.formats import atomic
from genomelm.formats.bgzf import BgzfWriter
from genomelm.formats.fasta import Region, resolve_contig, sniff_compression
from genomelm.log import get_logger

_log = get_logger(__name__)

INFO_ID_RE = re.compile(r"^[A-Za-z_][0-9A-Za-z_.]*$")  # VCF 4.3 §1.6.1 (INFO keys)
_INFO_TYPES = ("Integer", "Float", "Flag", "Character", "String")
_BASES = frozenset("ACGT")
_BGZF_BLOCK = 1 << 16  # bytes htslib writes at once (one BGZF block)
_TEXT_FLUSH = 4096  # records per write() call in text output
_FORMAT_BATCH = 8192  # values formatted by htslib at once (format_floats)
_END_LINE = '##INFO=<ID=END,Number=1,Type=Integer,Description="End position of the variant (1-based, inclusive)">'

# --------------------------------------------------------------------------- alleles

SNV, MNV, INDEL = "snv", "mnv", "indel"
# Reasons an allele cannot be scored, whatever the method (used verbatim in the SKIP INFO flag).
SYMBOLIC, BREAKEND, SPANNING_DELETION = "symbolic", "breakend", "spanning_deletion"
NO_ALT, UNSUPPORTED = "no_alt", "unsupported_allele"


def allele_kind(ref: str, alt: str | None) -> str:
    """What an ALT allele is relative to REF: snv, mnv or indel, or the reason it cannot be scored.

    Symbolic (<DEL>, <*>, <NON_REF>) -> 'symbolic'; '*' -> 'spanning_deletion'; breakends
    (G]17:198982], .A, A.) -> 'breakend'; missing ('.') -> 'no_alt'; alleles with other letters than
    A, C, G, T (N, IUPAC codes) or equal to REF -> 'unsupported_allele'. Case is ignored.
    """
    if alt is None or alt in ("", "."):
        return NO_ALT
    if alt.startswith("<"):
        return SYMBOLIC
    if alt == "*":
        return SPANNING_DELETION
    if "[" in alt or "]" in alt or (len(alt) > 1 and (alt.startswith(".") or alt.endswith("."))):
        return BREAKEND
    ref, alt = ref.upper(), alt.upper()
    if not ref or not set(ref) <= _BASES or not set(alt) <= _BASES or ref == alt:
        return UNSUPPORTED
    if len(ref) == len(alt):
        return SNV if len(ref) == 1 else MNV
    return INDEL


# --------------------------------------------------------------------------- header fields


@dataclass(frozen=True)
class InfoField:
    """One INFO header line: ``##INFO=<ID=...,Number=...,Type=...,Description="...">``."""

    id: str
    number: str  # 'A' (one per ALT allele), '1', '.', ...
    type: str  # Integer, Float, Flag, Character or String
    description: str

    def __post_init__(self) -> None:
        if not INFO_ID_RE.match(self.id):
            raise UsageError(
                f"INFO key {self.id!r} is not valid in VCF (must match [A-Za-z_][0-9A-Za-z_.]*); "
                "choose another --info-prefix"
            )
        if self.type not in _INFO_TYPES:
            raise ValueError(f"INFO type must be one of {_INFO_TYPES}, got {self.type!r}")

    def header_line(self) -> str:
        description = self.description.replace("\\", "\\\\").replace('"', '\\"')
        return f'##INFO=<ID={self.id},Number={self.number},Type={self.type},Description="{description}">'


def check_info_prefix(prefix: str) -> None:
    """UsageError unless keys '<prefix>LLR' etc. are valid INFO IDs."""
    InfoField(f"{prefix}X", "1", "Flag", "check")


# --------------------------------------------------------------------------- contig names


class ContigMapper:
    """Maps the VCF's contig names onto the FASTA's: exact, else chr1 <-> 1, chrM <-> MT.

    Logs one warning, the first time a name is matched through an alias.
    """

    def __init__(self, available: Iterable[str], source: str = "FASTA"):
        self._available = list(available)
        self._source = source
        self._cache: dict[str, str | None] = {}
        self.aliases: dict[str, str] = {}

    def __call__(self, name: str) -> str | None:
        """The FASTA name meaning contig ``name``, or None when there is none."""
        if name not in self._cache:
            found = resolve_contig(name, self._available)
            self._cache[name] = found
            if found is not None and found != name:
                self._note_alias(name, found)
        return self._cache[name]

    def _note_alias(self, name: str, found: str) -> None:
        if not self.aliases:
            _log.warning(
                "contig names differ between the VCF and the %s: matching them by alias (e.g. %s -> %s); "
                "the output keeps the VCF's names",
                self._source,
                name,
                found,
            )
        self.aliases[name] = found


# --------------------------------------------------------------------------- reading


def _translate_open_error(path: str, exc: Exception) -> Exception:
    if isinstance(exc, FileNotFoundError) or (path != "-" and not os.path.exists(path)):
        return InputError(f"VCF not found: {path}")
    if isinstance(exc, PermissionError):
        return InputError(f"VCF is not readable (permission denied): {path}")
    if isinstance(exc, IsADirectoryError) or os.path.isdir(path):
        return InputError(f"VCF is a directory, not a file: {path}")
    text = str(exc)
    if "EOF marker" in text or "truncated" in text:
        return FormatError(f"{path}: truncated bgzip/BCF file (no end-of-file marker)")
    return FormatError(
        f"{path}: not a VCF/BCF file (missing or malformed header: the first lines must be '##...' and '#CHROM ...')"
    )


class VariantReader:
    """A VCF/BCF file (plain, bgzip, BCF) or '-' (stdin) read record by record with pysam.

    Iterating yields ``pysam.VariantRecord`` objects in file order; errors become FormatError
    naming the last good record. ``records(regions)`` reads only records whose POS lies in the
    regions (needs a .tbi/.csi index). The header can be extended with ``add_info`` before the
    first record is read.
    """

    def __init__(self, path: str):
        self.path = path
        self._spool: str | None = None
        self._fd: int | None = None  # a plain-gzip file read as a stream
        self._verbosity = pysam.set_verbosity(0)  # our messages replace htslib's stderr lines
        # Bytes that are not UTF-8 (Latin-1 in an INFO value or a sample name) come through as surrogates
        # and are written back as the same bytes: records pass through byte for byte.
        self._decoding = pysam.libcutils.set_encoding_error_handler("surrogateescape")
        try:
            self._file = pysam.VariantFile(self._source(path), "r")
        except (OSError, ValueError) as exc:
            self.close()
            raise _translate_open_error(path, exc) from None
        self.header = self._file.header
        self._last: pysam.VariantRecord | None = None  # the last record read, for error messages

    def _source(self, path: str) -> str:
        """The path htslib should open: '-' reads the real stdin; a stdin without a file
        descriptor (an embedding program, a test runner) is copied to a temporary file first."""
        if path != "-":
            return self._stream_if_plain_gzip(path)
        try:
            sys.stdin.fileno()
            return "-"
        except (AttributeError, OSError, ValueError):
            fd, self._spool = tempfile.mkstemp(prefix="genomelm-stdin-", suffix=".vcf")
            with os.fdopen(fd, "wb") as handle:
                shutil.copyfileobj(getattr(sys.stdin, "buffer", sys.stdin), handle)
            return self._spool

    def _stream_if_plain_gzip(self, path: str) -> str | int:
        """A plain-gzip file (what `gzip calls.vcf` makes) cannot be opened by name (htslib wants to seek in
        it): it is read through a file descriptor, as a stream, like stdin."""
        if not is_plain_gzip(path):
            return path
        self._fd = os.open(path, os.O_RDONLY)
        return self._fd

    @property
    def streamed(self) -> bool:
        """True when the input can only be read from start to end (stdin, plain gzip): no region access."""
        return self.path == "-" or self._fd is not None

    # -- header

    @property
    def contigs(self) -> list[str]:
        """Contigs declared in the header (##contig lines), in order."""
        return list(self.header.contigs)

    def add_info(self, fields: list[InfoField]) -> bool:
        """Declare INFO fields; True if all of them were already declared identically (a re-run on
        scored output: their old values are then overwritten). A clash -> UsageError."""
        existing = [f for f in fields if f.id in self.header.info]
        for field in existing:
            old = self.header.info[field.id]
            if str(old.number) != field.number or old.type != field.type:
                raise UsageError(
                    f"{self.path}: INFO/{field.id} is already declared as Number={old.number},Type={old.type}; "
                    "choose another --info-prefix"
                )
        for field in fields:
            if field.id not in self.header.info:
                self.header.add_line(field.header_line())
        return bool(existing)

    def add_meta(self, key: str, value: str) -> None:
        """Add a '##key=value' line (e.g. the program and settings that produced the file)."""
        self.header.add_line(f"##{key}={value}")

    # -- records

    def __iter__(self) -> Iterator[pysam.VariantRecord]:
        return self._checked(iter(self._file))

    def records(self, regions: list[Region] | None = None) -> Iterator[pysam.VariantRecord]:
        """All records, or those whose POS lies in ``regions`` (0-based half-open; contig names matched
        to the VCF's by alias). Regions are merged and visited in header contig order, so each record
        is yielded once and a scatter by region gathers back into a sorted file."""
        if regions is None:
            return iter(self)
        return self._regions(regions)

    def _regions(self, regions: list[Region]) -> Iterator[pysam.VariantRecord]:
        self._require_index()
        for region in merge_regions(regions, self.contigs):
            try:
                fetched = self._file.fetch(region.contig, region.start, region.end)
            except ValueError:
                _log.warning("%s: no records for region %s (contig not in the index)", self.path, region)
                continue
            for record in self._checked(fetched):
                if record.start >= region.start:  # POS in region; a deletion that reaches in belongs to the left
                    yield record

    def _require_index(self) -> None:
        if self.path == "-":
            raise UsageError("--regions needs an indexed file, not stdin")
        if self._fd is not None:
            raise UsageError(
                f"--regions needs random access, and {self.path} is compressed with plain gzip: recompress it "
                "with `bgzip` and index it with `tabix -p vcf` (or use a BCF with `bcftools index`)"
            )
        if self._file.index is None:
            raise UsageError(
                f"--regions needs an index for {self.path} (.tbi or .csi): "
                "run `bcftools index` (or `tabix -p vcf`) on a bgzipped VCF or a BCF"
            )

    @property
    def last(self) -> str:
        """'chrom:pos' of the last record read ('the header' before any), for error messages."""
        return "the header" if self._last is None else f"{self._last.chrom}:{self._last.pos}"

    def _checked(self, records: Iterator[pysam.VariantRecord]) -> Iterator[pysam.VariantRecord]:
        try:
            for record in records:  # an error of the consumer never comes back in here: only htslib's
                self._last = record  # named only when an error needs it (formatting it costs per record)
                yield record
        except (OSError, ValueError) as exc:
            raise FormatError(
                f"{self.path}: cannot read the record after {self.last}: malformed line or truncated file ({exc})"
            ) from None

    def close(self) -> None:
        if getattr(self, "_file", None) is not None:
            self._file.close()
            self._file = None
        if self._fd is not None:
            with contextlib.suppress(OSError):  # pysam may have closed it with the file
                os.close(self._fd)
            self._fd = None
        if self._spool is not None and os.path.exists(self._spool):
            os.unlink(self._spool)
        pysam.set_verbosity(self._verbosity)
        pysam.libcutils.set_encoding_error_handler(self._decoding)

    def __enter__(self) -> VariantReader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def is_plain_gzip(path: str) -> bool:
    """True for a gzip file that is not BGZF (a file that cannot be read is left to htslib to report)."""
    try:
        return sniff_compression(path) == "gzip"
    except (OSError, FormatError):
        return False


def merge_regions(regions: list[Region], contig_order: list[str]) -> list[Region]:
    """Regions (0-based half-open) renamed to ``contig_order``'s spelling where an alias matches,
    merged where they overlap or touch, sorted by contig (``contig_order`` first) then start."""
    by_contig: dict[str, list[tuple[int, int | None]]] = {}
    for region in regions:
        contig = resolve_contig(region.contig, contig_order) or region.contig
        by_contig.setdefault(contig, []).append((region.start, region.end))
    rank = {name: i for i, name in enumerate(contig_order)}
    ordered = sorted(by_contig, key=lambda c: (rank.get(c, len(rank)), list(by_contig).index(c)))
    return [Region(c, s, e) for c in ordered for s, e in _merged(by_contig[c])]


def _merged(spans: list[tuple[int, int | None]]) -> list[tuple[int, int | None]]:
    """Union of [start, end) spans (end None = to the contig end), sorted."""
    out: list[list] = []
    for start, end in sorted(spans, key=lambda s: s[0]):
        if out and (out[-1][1] is None or start <= out[-1][1]):
            out[-1][1] = None if end is None or out[-1][1] is None else max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(s, e) for s, e in out]


# --------------------------------------------------------------------------- writing


def output_format(path: str) -> str:
    """'vcf' (plain text; also '-' = stdout), 'vcf.gz' (bgzip) or 'bcf', from the file name."""
    lower = path.lower()
    if path == "-" or lower.endswith(".vcf"):
        return "vcf"
    if lower.endswith((".vcf.gz", ".vcf.bgz")):
        return "vcf.gz"
    if lower.endswith(".bcf"):
        return "bcf"
    raise UsageError(f"cannot tell the output format from {path!r}: name it .vcf, .vcf.gz or .bcf, or use '-'")


def _temporary_path(path: str, suffix: str | None = None) -> str:
    """A hidden sibling of ``path`` ending in ``suffix`` (default: the variant file suffix of
    ``path``, since htslib and tabix look at it)."""
    if suffix is None:
        suffix = next(s for s in (".vcf.gz", ".vcf.bgz", ".vcf", ".bcf") if path.lower().endswith(s))
    return atomic.temporary_sibling(path, suffix)


# Checked before any work: the one rule every command applies to a file output (formats.atomic).
check_writable = atomic.check_output_file


class VariantWriter:
    """Writes records to ``path`` (format from the suffix; '-' = VCF text on stdout) through a
    temporary file renamed onto ``path`` by ``commit()``; ``abort()`` (or an exception inside a
    ``with`` block) removes it, so a failed run leaves nothing at ``path``.

    ``index=True`` writes a .tbi (bgzipped VCF; .csi beyond 2^29 bp) or .csi (BCF) beside it;
    the records must then be sorted. The header is the reader's, taken when the writer is made.
    """

    def __init__(
        self,
        path: str,
        reader: VariantReader,
        index: bool = False,
        stdout: TextIO | None = None,
        compress_threads: int = 0,
    ):
        self.path, self.format, self.index = path, output_format(path), index
        if index and self.format == "vcf":
            raise UsageError("--index needs a bgzipped VCF (.vcf.gz) or BCF (.bcf) output")
        self._reader = reader
        self._pending: list[str] = []
        self._max_pos = 0
        self._tmp = None if path == "-" else _temporary_path(path)
        self._index_tmp: str | None = None
        self._compress_threads = compress_threads  # .vcf.gz: BGZF blocks compressed on this many threads
        # BCF: the records are first written as VCF text, then converted in one C call by htslib's own
        # VCF -> BCF path (bcftools view; pysam's record writer re-derives INFO/END and drops or adds it).
        # bgzip: the text is compressed as it comes, through a Python file (formats.bgzf: the bytes of
        # bgzip, one clean error on a full disk, where a failing pysam BGZFile cannot even be closed).
        self._staged = _temporary_path(path, ".vcf") if self.format == "bcf" else None
        self._closed = False
        try:
            with atomic.write_errors(path):
                self._open(stdout)
        except BaseException:  # e.g. a header htslib cannot write: no temporary file left behind
            self.abort()
            raise

    def _open(self, stdout: TextIO | None) -> None:
        header = self._reader.header
        if self.path == "-":
            self._text = stdout or sys.stdout
        elif self.format == "vcf.gz":
            self._text = _BgzfText(self._tmp, self._compress_threads)
        else:
            self._text = open(self._staged or self._tmp, "w", encoding="utf-8", errors="surrogateescape")
        if self.format != "bcf":
            self._emit(str(header))
            return
        # BCF: the header is written last (see _convert), once htslib has added the lines for keys and
        # contigs the records use without declaring them; BCF stores END typed, so it is declared now.
        if "END" not in header.info:
            header.add_line(_END_LINE)

    def write(self, record: pysam.VariantRecord) -> None:
        """Append one record (already annotated)."""
        self._max_pos = max(self._max_pos, record.pos)
        with atomic.write_errors(self.path):
            self._pending.append(str(record))
            if len(self._pending) >= _TEXT_FLUSH:
                self._flush()

    def write_lines(self, lines: list[str], max_pos: int) -> None:
        """Append records already formatted as VCF text (as ``str(record)`` gives them, newlines
        included); ``max_pos``: their largest 1-based POS (needed with ``index`` only: it chooses TBI or
        CSI). For callers that edit the text of records."""
        self._max_pos = max(self._max_pos, max_pos)
        with atomic.write_errors(self.path):
            self._pending.extend(lines)
            if len(self._pending) >= _TEXT_FLUSH:
                self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._emit("".join(self._pending))
            self._pending = []

    def _emit(self, text: str) -> None:
        try:
            self._text.write(text)
        except UnicodeEncodeError:  # bytes that are not UTF-8, passed through: stdout takes them as bytes
            self._text.flush()
            self._text.buffer.write(text.encode("utf-8", "surrogateescape"))

    def commit(self) -> None:
        """Finish the file, build its index if asked, and move both into place (on failure: nothing)."""
        try:
            with atomic.write_errors(self.path):
                self._close_handle()
            if self._tmp is not None:
                self._publish()
        except BaseException:
            self.abort()
            raise

    def _publish(self) -> None:
        if self._staged is not None:
            self._convert()
        if self.index:
            self._build_index()
        atomic.publish(self._tmp, self.path)
        self._tmp = None
        if self._index_tmp is not None:
            atomic.publish(self._index_tmp, self.path + self._index_tmp[self._index_tmp.rfind(".") :])
            self._index_tmp = None
        self._drop_stale_index()

    def _close_handle(self, complete: bool = True) -> None:
        if self._closed:
            return
        self._closed = True
        if not complete and isinstance(self._text, _BgzfText):
            self._text.abort()  # no last blocks: the file is discarded
            return
        self._flush()
        if self.path == "-":
            self._text.flush()
        else:
            self._text.close()

    def _convert(self) -> None:
        """The finished VCF text -> BCF (htslib's VCF parser and BCF writer, what `bcftools view -Ob` does:
        every record and value as in .vcf output, INFO/END untouched; a record BCF cannot encode ->
        FormatError)."""
        try:
            with atomic.write_errors(self.path):
                self._prepend_header()
                pysam.bcftools.view("--no-version", "-O", "b", "-o", self._tmp, self._staged, catch_stdout=False)
        except pysam.utils.SamtoolsError as exc:
            if self._room_ran_out():
                raise atomic.no_room(self.path, OSError(errno.ENOSPC, "")) from None
            detail = " ".join(str(exc).split())
            raise FormatError(
                f"cannot write {self.path}: htslib cannot encode these records as BCF ({detail}); "
                "write .vcf or .vcf.gz instead"
            ) from None
        finally:
            atomic.discard(self._staged)
            self._staged = None

    def _prepend_header(self) -> None:
        """The staged BCF records behind the header as it is now: complete, with the lines htslib added for
        contigs and keys used without a declaration (as bcftools would need them)."""
        body, self._staged = self._staged, _temporary_path(self.path, ".vcf")
        try:
            with open(self._staged, "wb") as out, open(body, "rb") as records:
                out.write(str(self._reader.header).encode("utf-8", "surrogateescape"))
                shutil.copyfileobj(records, out, 1 << 20)
        finally:
            atomic.discard(body)

    def _room_ran_out(self) -> bool:
        """Whether a failed conversion most likely hit a full disk or the file-size limit (htslib's own
        message only says it could not write)."""
        size = os.path.getsize(self._tmp) if self._tmp and os.path.exists(self._tmp) else 0
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        disk = os.statvfs(os.path.dirname(os.path.abspath(self.path)))
        near_limit = limit != resource.RLIM_INFINITY and size + _BGZF_BLOCK >= limit
        return near_limit or disk.f_bavail * disk.f_frsize < _BGZF_BLOCK

    def _build_index(self) -> None:
        csi = self.format == "bcf" or self._max_pos >= 1 << 29  # TBI cannot address beyond 2^29
        self._index_tmp = self._tmp + (".csi" if csi else ".tbi")
        try:
            if self.format == "bcf":
                pysam.bcftools.index("--csi", "--force", "-o", self._index_tmp, self._tmp)
            else:
                pysam.tabix_index(self._tmp, preset="vcf", force=True, csi=csi, index=self._index_tmp)
        except (OSError, pysam.utils.SamtoolsError) as exc:
            detail = " ".join(str(exc).split()).replace(self._tmp, self.path)  # never show the hidden temp name
            raise FormatError(
                f"cannot index {self.path}: records must be sorted by contig and position "
                f"(sort with `bcftools sort`, or drop --index) ({detail})"
            ) from None

    def _drop_stale_index(self) -> None:
        """An index left from an older file at this path would now point into the wrong bytes."""
        if self.index or self.format == "vcf":
            return
        for suffix in (".tbi", ".csi"):
            if os.path.exists(self.path + suffix):
                os.unlink(self.path + suffix)
                _log.info("removed the stale index %s%s (rerun with --index for a new one)", self.path, suffix)

    def abort(self) -> None:
        """Drop everything written so far (nothing appears at the output path)."""
        try:
            self._close_handle(complete=False)
        except Exception:  # already failing: the original error matters, not this one
            pass
        atomic.discard(self._tmp, self._index_tmp, self._staged)
        self._tmp = self._index_tmp = self._staged = None

    def __enter__(self) -> VariantWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


class _BgzfText:
    """A text file written as BGZF (formats.bgzf): what VariantWriter writes a .vcf.gz through."""

    def __init__(self, path: str, workers: int):
        self._handle = open(path, "wb")
        self._bgzf = BgzfWriter(self._handle, workers)

    def write(self, text: str) -> None:
        self._bgzf.write(text.encode("utf-8", "surrogateescape"))  # bytes that are not UTF-8 pass through

    def close(self) -> None:
        try:
            self._bgzf.close()
        finally:
            self._handle.close()

    def abort(self) -> None:
        self._bgzf.abort()
        self._handle.close()


def set_info(
    record: pysam.VariantRecord, values: dict[str, object], clear: Iterable[str] = (), prefix: str | None = None
) -> int:
    """Set INFO keys on ``record`` (None values are left out). Keys in ``clear``, and every key starting
    with ``prefix`` (declared in the header or not: values from an earlier run or another tool must not
    survive beside the new ones), are removed first. Returns how many old values were removed."""
    stale = [key for key in record.info if key in clear or (prefix and key.startswith(prefix))]
    for key in stale:
        del record.info[key]
    for key, value in values.items():
        if value is not None:
            record.info[key] = value
    return len(stale)


def format_floats(values: list[float]) -> list[str]:
    """``values`` as htslib writes them in a Float INFO field (float32, its own %g-like digits), through
    htslib itself: one scratch record per 8192 values, so callers splicing INFO text get the bytes
    pysam's ``record.info[key] = value`` would give, at a tenth of its cost."""
    header = pysam.VariantHeader()
    header.contigs.add("x", length=1)
    header.add_line('##INFO=<ID=X,Number=.,Type=Float,Description="scratch">')
    record = header.new_record(contig="x", start=0, stop=1, alleles=("A", "C"))
    out: list[str] = []
    for start in range(0, len(values), _FORMAT_BATCH):
        record.info["X"] = values[start : start + _FORMAT_BATCH]
        out += str(record).rstrip("\n").split("\t")[7][2:].split(",")
    return out


# --------------------------------------------------------------------------- flat table


class TsvWriter:
    """A tab-separated table, one row per ALT allele, written to a temporary file renamed on
    ``commit()``. Missing values are written as 'NA'; ``comment`` (a line starting with '#', e.g.
    provenance) goes before the column names."""

    def __init__(self, path: str, columns: list[str], comment: str | None = None):
        if path == "-":
            raise UsageError("--tsv needs a file path (stdout carries the VCF)")
        self.path = path
        self._tmp = _temporary_path(path, suffix="")
        self._handle = open(self._tmp, "w", encoding="utf-8", errors="surrogateescape")
        if comment is not None:
            with atomic.write_errors(self.path):
                self._handle.write(comment + "\n")
        self.row(columns)

    def row(self, values: list[object]) -> None:
        with atomic.write_errors(self.path):
            self._handle.write("\t".join(_cell(v) for v in values) + "\n")

    def commit(self) -> None:
        try:
            with atomic.write_errors(self.path):
                self._handle.close()
            atomic.publish(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._handle.close()
        atomic.discard(self._tmp)

    def __enter__(self) -> TsvWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def _cell(value: object) -> str:
    if value is None or value == "":
        return "NA"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
