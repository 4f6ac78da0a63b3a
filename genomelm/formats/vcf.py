"""VCF/BCF in and out through pysam (htslib): plain, bgzip, BCF, '-' for stdin/stdout.

Coordinates: a pysam record's ``start`` is 0-based (``pos`` is the 1-based VCF POS); every
``Region`` here is 0-based half-open, as in ``genomelm.formats.fasta``.

Records are passed through untouched apart from the INFO keys a command sets (DESIGN.md §7):
text output (.vcf, .vcf.gz, '-') is each record as htslib formats it, so nothing is re-ordered or
dropped. htslib re-renders numbers it parsed (a float kept as float32 is printed with 6
significant digits), exactly as bcftools does. BCF output goes through htslib's BCF writer,
which adds INFO/END to records with symbolic alleles; END is declared in the header for that.

No torch here (layer rule): this module only reads and writes variant files.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TextIO

import pysam
import pysam.bcftools  # the bundled bcftools: the one way pysam builds a BCF index
import pysam.utils

from genomelm.errors import FormatError, InputError, UsageError
from genomelm.formats.fasta import Region, resolve_contig
from genomelm.log import get_logger

_log = get_logger(__name__)

INFO_ID_RE = re.compile(r"^[A-Za-z_][0-9A-Za-z_.]*$")  # VCF 4.3 §1.6.1 (INFO keys)
_INFO_TYPES = ("Integer", "Float", "Flag", "Character", "String")
_BASES = frozenset("ACGT")
_TEXT_FLUSH = 4096  # records per write() call in text output
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
        self._verbosity = pysam.set_verbosity(0)  # our messages replace htslib's stderr lines
        try:
            self._file = pysam.VariantFile(self._source(path), "r")
        except (OSError, ValueError) as exc:
            self.close()
            raise _translate_open_error(path, exc) from None
        self.header = self._file.header
        self.last = "the header"  # 'chrom:pos' of the last record read, for error messages

    def _source(self, path: str) -> str:
        """The path htslib should open: '-' reads the real stdin; a stdin without a file
        descriptor (an embedding program, a test runner) is copied to a temporary file first."""
        if path != "-":
            return path
        try:
            sys.stdin.fileno()
            return "-"
        except (AttributeError, OSError, ValueError):
            fd, self._spool = tempfile.mkstemp(prefix="genomelm-stdin-", suffix=".vcf")
            with os.fdopen(fd, "wb") as handle:
                shutil.copyfileobj(getattr(sys.stdin, "buffer", sys.stdin), handle)
            return self._spool

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
        if self._file.index is None:
            raise UsageError(
                f"--regions needs an index for {self.path} (.tbi or .csi): "
                "run `bcftools index` (or `tabix -p vcf`) on a bgzipped VCF or a BCF"
            )

    def _checked(self, records: Iterator[pysam.VariantRecord]) -> Iterator[pysam.VariantRecord]:
        while True:
            try:
                record = next(records)
            except StopIteration:
                return
            except (OSError, ValueError) as exc:
                raise FormatError(
                    f"{self.path}: cannot read the record after {self.last}: malformed line or truncated file ({exc})"
                ) from None
            self.last = f"{record.chrom}:{record.pos}"
            yield record

    def close(self) -> None:
        if getattr(self, "_file", None) is not None:
            self._file.close()
            self._file = None
        if self._spool is not None and os.path.exists(self._spool):
            os.unlink(self._spool)
        pysam.set_verbosity(self._verbosity)

    def __enter__(self) -> VariantReader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


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
    directory, name = os.path.split(os.path.abspath(path))
    if suffix is None:
        suffix = next(s for s in (".vcf.gz", ".vcf.bgz", ".vcf", ".bcf") if name.lower().endswith(s))
    return os.path.join(directory, f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp{suffix}")


def check_writable(path: str, what: str = "output") -> None:
    """InputError unless a file can be created in ``path``'s directory (checked before any work)."""
    if path == "-":
        return
    directory = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(directory):
        raise InputError(f"{what} directory does not exist: {directory}")
    if os.path.isdir(path):
        raise InputError(f"{what} path is a directory: {path}")
    probe = None
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".genomelm-probe-")
        os.close(fd)
    except OSError as exc:
        raise InputError(f"cannot write the {what} in {directory} ({exc.strerror})") from None
    finally:
        if probe is not None:
            os.unlink(probe)


class VariantWriter:
    """Writes records to ``path`` (format from the suffix; '-' = VCF text on stdout) through a
    temporary file renamed onto ``path`` by ``commit()``; ``abort()`` (or an exception inside a
    ``with`` block) removes it, so a failed run leaves nothing at ``path``.

    ``index=True`` writes a .tbi (bgzipped VCF; .csi beyond 2^29 bp) or .csi (BCF) beside it;
    the records must then be sorted. The header is the reader's, taken when the writer is made.
    """

    def __init__(self, path: str, reader: VariantReader, index: bool = False, stdout: TextIO | None = None):
        self.path, self.format, self.index = path, output_format(path), index
        if index and self.format == "vcf":
            raise UsageError("--index needs a bgzipped VCF (.vcf.gz) or BCF (.bcf) output")
        self._reader = reader
        self._pending: list[str] = []
        self._max_pos = 0
        self._tmp = None if path == "-" else _temporary_path(path)
        self._index_tmp: str | None = None
        self._closed = False
        self._open(stdout)

    def _open(self, stdout: TextIO | None) -> None:
        header = self._reader.header
        if self.format == "bcf":
            header = header.copy()
            if "END" not in header.info:  # htslib's BCF writer adds END to symbolic-allele records
                header.add_line(_END_LINE)
            self._shape = _header_shape(self._reader.header)
            self._bcf = pysam.VariantFile(self._tmp, "wb", header=header)
            return
        if self.path == "-":
            self._text = stdout or sys.stdout
        elif self.format == "vcf.gz":
            self._text = pysam.BGZFile(self._tmp, "wb")
        else:
            self._text = open(self._tmp, "w", encoding="utf-8")
        self._emit(str(header))

    def write(self, record: pysam.VariantRecord) -> None:
        """Append one record (already annotated)."""
        self._max_pos = max(self._max_pos, record.pos)
        if self.format == "bcf":
            self._check_bcf_header(record)
            self._bcf.write(record)
            return
        self._pending.append(str(record))
        if len(self._pending) >= _TEXT_FLUSH:
            self._flush()

    def _check_bcf_header(self, record: pysam.VariantRecord) -> None:
        # htslib adds header lines on the fly for contigs/INFO/FORMAT keys a VCF uses without
        # declaring them; a BCF written with the original header would then be corrupt.
        if _header_shape(self._reader.header) != self._shape:
            raise FormatError(
                f"{self._reader.path}: record {record.chrom}:{record.pos} uses a contig, INFO, FORMAT or FILTER "
                "key the header does not declare; BCF output needs a complete header: write .vcf/.vcf.gz "
                "or fix the header (e.g. bcftools reheader --fai REF.fa.fai)"
            )

    def _flush(self) -> None:
        if self._pending:
            self._emit("".join(self._pending))
            self._pending = []

    def _emit(self, text: str) -> None:
        if self.format == "vcf.gz":
            self._text.write(text.encode("utf-8"))
        else:
            self._text.write(text)

    def commit(self) -> None:
        """Finish the file, build its index if asked, and move both into place (on failure: nothing)."""
        try:
            self._close_handle()
            if self._tmp is not None:
                self._publish()
        except BaseException:
            self.abort()
            raise

    def _publish(self) -> None:
        if self.index:
            self._build_index()
        os.replace(self._tmp, self.path)
        self._tmp = None
        if self._index_tmp is not None:
            os.replace(self._index_tmp, self.path + self._index_tmp[self._index_tmp.rfind(".") :])
            self._index_tmp = None
        self._drop_stale_index()

    def _close_handle(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.format == "bcf":
            self._bcf.close()
            return
        self._flush()
        if self.path == "-":
            self._text.flush()
        else:
            self._text.close()

    def _build_index(self) -> None:
        csi = self.format == "bcf" or self._max_pos >= 1 << 29  # TBI cannot address beyond 2^29
        self._index_tmp = self._tmp + (".csi" if csi else ".tbi")
        try:
            if self.format == "bcf":
                pysam.bcftools.index("--csi", "--force", "-o", self._index_tmp, self._tmp)
            else:
                pysam.tabix_index(self._tmp, preset="vcf", force=True, csi=csi, index=self._index_tmp)
        except (OSError, pysam.utils.SamtoolsError) as exc:
            raise FormatError(
                f"cannot index {self.path}: records must be sorted by contig and position "
                f"(sort with `bcftools sort`, or drop --index) ({str(exc).strip()})"
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
            self._close_handle()
        except Exception:  # already failing: the original error matters, not this one
            pass
        for path in (self._tmp, self._index_tmp):
            if path is not None and os.path.exists(path):
                os.unlink(path)
        self._tmp = self._index_tmp = None

    def __enter__(self) -> VariantWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def _header_shape(header: pysam.VariantHeader) -> tuple[int, int, int, int]:
    """How many contigs, INFO, FORMAT and FILTER keys the header declares (grows when htslib adds some)."""
    return len(header.contigs), len(header.info), len(header.formats), len(header.filters)


def set_info(record: pysam.VariantRecord, values: dict[str, object], clear: Iterable[str] = ()) -> None:
    """Set INFO keys on ``record`` (None values are left out); keys in ``clear`` are removed first."""
    for key in clear:
        if key in record.info:
            del record.info[key]
    for key, value in values.items():
        if value is not None:
            record.info[key] = value


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
        self._handle = open(self._tmp, "w", encoding="utf-8")
        if comment is not None:
            self._handle.write(comment + "\n")
        self._handle.write("\t".join(columns) + "\n")

    def row(self, values: list[object]) -> None:
        self._handle.write("\t".join(_cell(v) for v in values) + "\n")

    def commit(self) -> None:
        self._handle.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._handle.close()
        if os.path.exists(self._tmp):
            os.unlink(self._tmp)

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
