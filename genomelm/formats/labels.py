"""Labelled DNA sequences for classification: tables, FASTA and BED (no torch here).

Accepted inputs (plain or gzip; the layout is recognised from the content, not the file name):
  - CSV / TSV with a header row: a sequence column and a label column (GUE: ``sequence,label``;
    Genomic Benchmarks exports: ``seq,label``); an optional id column. Names are configurable.
  - FASTA, the label in the header (``>seq1 label=promoter``; ``|`` or ``;`` also separate fields),
    or in a separate labels table (``id<TAB>label``, header optional).
  - BED (0-based half-open, as always in BED) plus a reference FASTA; the label is column 4 unless a
    ``#`` header line names the label column, or the label column is given as a 1-based number.
    Column 6 ``-`` takes the reverse complement, as ``bedtools getfasta -s`` does.

Sequences are returned as in the file (case kept). Class names are strings; ``class_names`` orders them
(numerically when every label is an integer) and that order is the class index used by the model.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from genomelm.errors import FormatError, InputError, UsageError
from genomelm.formats.fasta import FastaSource, Region, resolve_contig
from genomelm.log import get_logger

log = get_logger(__name__)

FORMATS = ("auto", "table", "fasta", "bed")
SEQUENCE_COLUMNS = ("sequence", "seq", "dna", "sequences")  # tried in order when none is named
LABEL_COLUMNS = ("label", "labels", "class", "target", "y")
ID_COLUMNS = ("id", "name", "seq_id", "sequence_id")
_COMPLEMENT = str.maketrans("ACGTUNacgtunRYSWKMBDHVryswkmbdhv", "TGCAANtgcaanYRSWMKVHDByrswmkvhdb")
csv.field_size_limit(1 << 30)  # one genomic sequence per cell can be far longer than csv's 128 kB default


@dataclass(frozen=True)
class LabelledRecord:
    """One input sequence. ``where`` ('file:line') locates it for messages. ``problem`` is set (and
    ``sequence`` empty) when the record could not be resolved, e.g. a BED interval outside its contig."""

    id: str
    sequence: str
    label: str | None
    where: str
    problem: str | None = None


@dataclass(frozen=True)
class Columns:
    """Column choices. Table: names (case-insensitive); None = the first usual name present.
    BED: ``label`` may be a 1-based column number. FASTA: ``label`` is the header's key (``label=``)."""

    sequence: str | None = None
    label: str | None = None
    id: str | None = None


def read_records(path: str, **kwargs) -> list[LabelledRecord]:
    """All records of ``path`` (see ``iter_records``); an input without any record is a FormatError."""
    records = list(iter_records(path, **kwargs))
    if not records:
        raise FormatError(f"{path}: no sequences found (empty input)")
    return records


def iter_records(
    path: str,
    columns: Columns = Columns(),
    fasta: str | None = None,
    labels: str | None = None,
    require_labels: bool = True,
    fmt: str = "auto",
) -> Iterator[LabelledRecord]:
    """Records of a table, FASTA or BED file ('-' = stdin, plain text only), lazily.

    ``fasta``: the reference for BED input. ``labels``: a labels table for FASTA input.
    ``require_labels``: a record without a label is a FormatError (training); else its label is None.
    """
    kind = detect_format(path, fasta, fmt)
    if kind == "bed":
        if fasta is None:
            raise UsageError(f"{path}: BED input needs the reference sequence: pass --fasta REF.fa")
        return _bed_records(path, fasta, columns, require_labels)
    if fasta is not None:
        raise UsageError(f"--fasta is only for BED input, but {path} looks like a {kind} file")
    if kind == "fasta":
        return _fasta_records(path, columns, labels, require_labels)
    if labels is not None:
        raise UsageError("--labels (a labels table) is only for FASTA input")
    return _table_records(path, columns, require_labels)


# --------------------------------------------------------------------------- classes


def class_names(labels: Iterable[str]) -> list[str]:
    """The distinct labels in class-index order: numeric order when all are integers, else sorted text."""
    distinct = set(labels)
    if all(_is_int(x) for x in distinct):
        return sorted(distinct, key=int)
    return sorted(distinct)


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def class_index(labels: Iterable[str], classes: list[str]) -> list[int]:
    """Class indices of ``labels``; integer labels match numerically ('01' is class '1')."""
    lookup = {name: i for i, name in enumerate(classes)}
    numeric = {int(name): i for i, name in enumerate(classes) if _is_int(name)}
    out = []
    for label in labels:
        index = lookup.get(label)
        if index is None and _is_int(label):
            index = numeric.get(int(label))
        out.append(-1 if index is None else index)
    return out


def reverse_complement(sequence: str) -> str:
    """Reverse complement of DNA text (IUPAC codes complemented, case kept)."""
    return sequence.translate(_COMPLEMENT)[::-1]


# --------------------------------------------------------------------------- opening and sniffing


@contextmanager
def _open_text(path: str) -> Iterator[io.TextIOBase]:
    """A text handle on a plain or gzip file, or on stdin for '-' (left open afterwards)."""
    if path == "-":
        handle = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", newline="")
        try:
            yield handle
        finally:
            handle.detach()  # closing the wrapper would close the process's stdin
        return
    if not os.path.exists(path):
        raise InputError(f"input not found: {path}")
    if os.path.isdir(path):
        raise InputError(f"input is a directory, not a file: {path}")
    with open(path, "rb") as handle:
        magic = handle.read(2)
    raw = gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")
    with io.TextIOWrapper(raw, encoding="utf-8", newline="") as handle:
        yield handle


def _lines(handle: io.TextIOBase, path: str) -> Iterator[str]:
    """Lines without their line ending; decoding and gzip errors become FormatError."""
    try:
        for line in handle:
            yield line.rstrip("\r\n")
    except (UnicodeDecodeError, EOFError, OSError) as exc:
        raise FormatError(f"{path}: not a readable text file ({exc})") from None


def detect_format(path: str, fasta: str | None = None, fmt: str = "auto") -> str:
    """'table', 'fasta' or 'bed'. Auto: '>' first -> FASTA; a .bed name or --fasta -> BED; else table."""
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt != "auto":
        return fmt
    name = path.lower().removesuffix(".gz").removesuffix(".bgz")
    if name.endswith(".bed") or fasta is not None:
        return "bed"
    if path == "-":
        return "table"  # stdin cannot be peeked without consuming it; --format fasta for FASTA
    with _open_text(path) as handle:
        first = next((line for line in _lines(handle, path) if line.strip()), "")
    return "fasta" if first.startswith(">") else "table"


# --------------------------------------------------------------------------- tables


def _table_records(path: str, columns: Columns, require_labels: bool) -> Iterator[LabelledRecord]:
    with _open_text(path) as handle:
        lines = _lines(handle, path)
        header_line, header_number = next(((line, n) for n, line in enumerate(lines, 1) if line.strip()), ("", 0))
        if not header_number:
            return
        delimiter = "\t" if "\t" in header_line else ","
        header = next(csv.reader([header_line], delimiter=delimiter))
        indices = _table_columns(header, columns, path, require_labels)
        rows = csv.reader(lines, delimiter=delimiter)
        number = 0
        for row in rows:
            if row and any(cell.strip() for cell in row):
                number += 1
                where = f"{path}:{header_number + rows.line_num}"
                yield _table_record(row, number, len(header), indices, where, require_labels)


def _table_columns(header: list[str], columns: Columns, path: str, require_labels: bool):
    """(sequence, label, id) column indices; label and id may be None."""
    names = [h.strip().lower() for h in header]
    seq_i = _find_column(names, columns.sequence, SEQUENCE_COLUMNS, "sequence", path, header, True)
    label_i = _find_column(names, columns.label, LABEL_COLUMNS, "label", path, header, require_labels)
    id_i = _find_column(names, columns.id, ID_COLUMNS, "id", path, header, False)
    return seq_i, label_i, id_i


def _find_column(names, wanted, defaults, role, path, header, required) -> int | None:
    candidates = [wanted.lower()] if wanted else list(defaults)
    index = next((names.index(c) for c in candidates if c in names), None)
    if index is None and (required or wanted):
        tried = wanted or " / ".join(defaults)
        raise FormatError(
            f"{path}: no {role} column ({tried}) in the header {header!r}; name it with --{role}-column "
            "(the first line must be a header row)"
        )
    return index


def _table_record(row, number, width, indices, where, require_labels) -> LabelledRecord:
    """One data row; ``number`` (1-based, header excluded) is the id when there is no id column."""
    seq_i, label_i, id_i = indices
    if len(row) != width:
        raise FormatError(f"{where}: {len(row)} fields, but the header has {width}")
    sequence = row[seq_i].strip()
    if not sequence:
        raise FormatError(f"{where}: empty sequence")
    label = row[label_i].strip() if label_i is not None else None
    label = _checked_label(label or None, where, require_labels)
    record_id = row[id_i].strip() if id_i is not None and row[id_i].strip() else str(number)
    return LabelledRecord(record_id, sequence, label, where)


def _checked_label(label: str | None, where: str, require_labels: bool) -> str | None:
    if label is None and require_labels:
        raise FormatError(f"{where}: missing label")
    return label


# --------------------------------------------------------------------------- FASTA


def _fasta_records(
    path: str, columns: Columns, labels_path: str | None, require_labels: bool
) -> Iterator[LabelledRecord]:
    key = columns.label or "label"
    label_of = read_labels_table(labels_path, key) if labels_path else None
    for header, sequence, line in _fasta_entries(path):
        record_id = _fasta_id(header, key)
        where = f"{path}:{line}"
        if not record_id:
            raise FormatError(f"{where}: a '>' header line has no sequence name")
        if not sequence:
            raise FormatError(f"{where}: record {record_id} has no sequence")
        label = label_of.get(record_id) if label_of is not None else _header_label(header, key)
        if label is None and require_labels:
            hint = f"not in {labels_path}" if label_of is not None else f"no '{key}=' in its header"
            raise FormatError(f"{where}: record {record_id} has no label ({hint})")
        yield LabelledRecord(record_id, sequence, label, where)


def _fasta_entries(path: str) -> Iterator[tuple[str, str, int]]:
    """(header without '>', sequence, header line number) for each FASTA record."""
    header, pieces, header_line = None, [], 0
    with _open_text(path) as handle:
        for number, line in enumerate(_lines(handle, path), 1):
            if line.startswith(">"):
                if header is not None:
                    yield header, "".join(pieces), header_line
                header, pieces, header_line = line[1:].strip(), [], number
            elif line.strip():
                if header is None:
                    raise FormatError(f"{path}:{number}: sequence data before the first '>' header")
                pieces.append(line.strip())
    if header is not None:
        yield header, "".join(pieces), header_line


def _fasta_id(header: str, key: str) -> str:
    """The first word of the header, without a '|label=...' or ';label=...' glued to it."""
    word = header.split()[0] if header.split() else ""
    return re.split(rf"[|;]{re.escape(key)}=", word)[0]


def _header_label(header: str, key: str) -> str | None:
    """The value of ``key=value`` in a FASTA header (fields separated by spaces, '|' or ';')."""
    match = re.search(rf"(?:^|[\s|;]){re.escape(key)}=([^\s|;]+)", header)
    return match.group(1) if match else None


def read_labels_table(path: str, key: str = "label") -> dict[str, str]:
    """id -> label from a table: first column the id, the label in the column named ``key`` when the
    first row is a header naming it, else the second column. Tab, comma or whitespace separated."""
    out: dict[str, str] = {}
    label_i = 1
    with _open_text(path) as handle:
        for number, line in enumerate(_lines(handle, path), 1):
            fields = _split_fields(line)
            if not fields or line.startswith("#"):
                continue
            lowered = [f.lower() for f in fields]
            if not out and key.lower() in lowered and number == 1:
                label_i = lowered.index(key.lower())
                continue
            if len(fields) <= label_i:
                raise FormatError(f"{path}:{number}: expected an id and a label, found {len(fields)} field(s)")
            out[fields[0]] = fields[label_i]
    if not out:
        raise FormatError(f"{path}: no labels found (empty labels table)")
    return out


def _split_fields(line: str) -> list[str]:
    for separator in ("\t", ","):
        if separator in line:
            return [f.strip() for f in line.split(separator)]
    return line.split()


# --------------------------------------------------------------------------- BED + reference


@dataclass(frozen=True)
class _BedRow:
    region: Region  # 0-based half-open, contig name as in the BED file
    label: str | None
    id: str
    reverse: bool
    where: str


def _bed_records(path: str, fasta: str, columns: Columns, require_labels: bool) -> Iterator[LabelledRecord]:
    rows = list(_bed_rows(path, columns, require_labels))
    with FastaSource(fasta) as source:
        if not source.indexed:
            log.warning("%s is not indexable (plain gzip?): reading it whole; bgzip it for random access", fasta)
        lengths = source.contig_lengths()
        sequences = _bed_sequences(source, rows, lengths)
        for row in rows:
            contig, problem = _resolve_row(row, lengths)
            text = sequences.get((contig, row.region.start, row.region.end), "") if problem is None else ""
            text = reverse_complement(text) if row.reverse else text
            yield LabelledRecord(row.id, text, row.label, row.where, problem)


def _resolve_row(row: _BedRow, lengths: dict[str, int]) -> tuple[str | None, str | None]:
    """(contig name in the FASTA, problem or None) for one BED interval."""
    contig = resolve_contig(row.region.contig, lengths)
    if contig is None:
        return None, f"contig {row.region.contig} not in the reference"
    if row.region.end > lengths[contig]:
        return None, f"interval ends at {row.region.end}, beyond contig {contig} (length {lengths[contig]})"
    return contig, None


def _bed_sequences(source: FastaSource, rows: list[_BedRow], lengths: dict[str, int]) -> dict:
    """(contig, start, end) -> sequence for every resolvable row: one pass over the reference."""
    wanted = {}
    for row in rows:
        contig, problem = _resolve_row(row, lengths)
        if problem is None:
            wanted[(contig, row.region.start, row.region.end)] = Region(contig, row.region.start, row.region.end)
    if not wanted:
        return {}
    if source.indexed:
        return {key: str(source.fetch(*key)) for key in wanted}
    longest = max(r.end - r.start for r in wanted.values())
    # A window as long as the longest interval gives exactly one window per interval.
    return {(w.contig, w.start, w.end): w.sequence for w in source.windows(longest, longest, list(wanted.values()))}


def _bed_rows(path: str, columns: Columns, require_labels: bool) -> Iterator[_BedRow]:
    label_i = _bed_label_index(columns.label)
    with _open_text(path) as handle:
        for number, line in enumerate(_lines(handle, path), 1):
            if line.startswith("#"):
                label_i = _bed_header_label(line, columns.label, label_i)
                continue
            if not line.strip() or line.startswith(("track", "browser")):
                continue
            yield _bed_row(line, label_i, f"{path}:{number}", require_labels)


def _bed_label_index(label: str | None) -> int:
    """0-based column of the label: column 4 by default, or a 1-based number given by the user."""
    if label is None or not label.isdigit():
        return 3
    if int(label) < 4:
        raise UsageError(f"--label-column {label}: BED columns 1-3 are chrom, start, end")
    return int(label) - 1


def _bed_header_label(line: str, label: str | None, current: int) -> int:
    """A '#chrom start end ... label' header line may name the label column."""
    names = [n.strip().lower() for n in _split_fields(line.lstrip("#"))]
    key = (label or "label").lower()
    return names.index(key) if key in names and names.index(key) >= 3 else current


def _bed_row(line: str, label_i: int, where: str, require_labels: bool) -> _BedRow:
    fields = line.split("\t") if "\t" in line else line.split()
    if len(fields) < 3:
        raise FormatError(f"{where}: expected at least 3 columns (chrom, start, end), found {len(fields)}")
    try:
        start, end = int(fields[1]), int(fields[2])
    except ValueError:
        raise FormatError(f"{where}: start and end must be integers, got {fields[1]!r}, {fields[2]!r}") from None
    if start < 0 or end <= start:
        raise FormatError(f"{where}: invalid or empty interval [{start}, {end}) (BED is 0-based half-open)")
    label = fields[label_i].strip() if len(fields) > label_i and fields[label_i].strip() not in ("", ".") else None
    label = _checked_label(label, where, require_labels)
    name = fields[3].strip() if len(fields) > 3 and label_i != 3 and fields[3].strip() not in ("", ".") else None
    region = Region(fields[0], start, end)
    reverse = len(fields) > 5 and label_i != 5 and fields[5].strip() == "-"
    return _BedRow(region, label, name or str(region), reverse, where)
