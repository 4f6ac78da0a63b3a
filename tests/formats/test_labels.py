"""Labelled-sequence readers: tables, FASTA (+ labels table), BED + reference; classes; errors."""

import gzip

import pytest

from genomelm.errors import FormatError, InputError, UsageError
from genomelm.formats.labels import (
    Columns,
    class_index,
    class_names,
    detect_format,
    iter_records,
    read_labels_table,
    read_records,
    reverse_complement,
)
from tests.conftest import random_dna, write_fasta


def _write(path, text, compress=False):
    if compress:
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return str(path)


def test_gue_style_csv_gzip(tmp_path):
    path = _write(tmp_path / "train.csv.gz", "sequence,label\nACGT,0\n\nacgtn,1\n", compress=True)
    records = read_records(path)
    assert [(r.id, r.sequence, r.label) for r in records] == [("1", "ACGT", "0"), ("2", "acgtn", "1")]
    assert records[1].where == f"{path}:4"  # file line, blank line counted
    assert detect_format(path) == "table"


def test_tsv_with_named_columns_and_ids(tmp_path):
    path = _write(tmp_path / "d.tsv", "name\tdna_seq\tclass\nr1\tAAAA\tpromoter\nr2\tCCCC\tenhancer\n")
    records = read_records(path, columns=Columns(sequence="DNA_SEQ", label="class"))
    assert [(r.id, r.sequence, r.label) for r in records] == [("r1", "AAAA", "promoter"), ("r2", "CCCC", "enhancer")]


def test_genomic_benchmarks_seq_column_and_unlabelled_input(tmp_path):
    path = _write(tmp_path / "gb.csv", "seq,label\nACGT,1\n")
    assert read_records(path)[0].sequence == "ACGT"
    unlabelled = _write(tmp_path / "u.csv", "id,sequence\nx,ACGT\n")
    assert read_records(unlabelled, require_labels=False)[0].label is None
    with pytest.raises(FormatError, match="no label column"):
        read_records(unlabelled)


@pytest.mark.parametrize(
    "text, message",
    [
        ("sequence,label\nACGT,0,extra\n", r"t\.csv:2: 3 fields, but the header has 2"),
        ("sequence,label\n,1\n", r"t\.csv:2: empty sequence"),
        ("sequence,label\nACGT,\n", r"t\.csv:2: missing label"),
        ("foo,bar\nACGT,1\n", r"no sequence column .*--sequence-column"),
    ],
)
def test_malformed_tables(tmp_path, text, message):
    with pytest.raises(FormatError, match=message):
        read_records(_write(tmp_path / "t.csv", text))


def test_empty_inputs(tmp_path):
    with pytest.raises(FormatError, match="no sequences found"):
        read_records(_write(tmp_path / "empty.csv", ""))
    with pytest.raises(FormatError, match="no sequences found"):
        read_records(_write(tmp_path / "header_only.csv", "sequence,label\n"))
    with pytest.raises(InputError, match="input not found"):
        read_records(str(tmp_path / "missing.csv"))


def test_fasta_labels_in_headers(tmp_path):
    path = _write(tmp_path / "x.fa", ">a label=1 other=2\nACGT\nAC\n>b|label=x\nGG\n>c desc;label=y\nTT\n")
    records = read_records(path)
    assert [(r.id, r.sequence, r.label) for r in records] == [("a", "ACGTAC", "1"), ("b", "GG", "x"), ("c", "TT", "y")]
    assert detect_format(path) == "fasta"
    with pytest.raises(FormatError, match="record b has no label"):
        read_records(_write(tmp_path / "y.fa", ">a label=1\nAC\n>b\nGG\n"))


def test_fasta_with_labels_table(tmp_path):
    fasta = _write(tmp_path / "x.fa", ">a\nACGT\n>b\nGG\n")
    with_header = _write(tmp_path / "l.tsv", "id\tscore\tlabel\na\t3\tpos\nb\t1\tneg\n")
    without = _write(tmp_path / "m.tsv", "a\tpos\nb\tneg\n")
    for table in (with_header, without):
        assert [r.label for r in read_records(fasta, labels=table)] == ["pos", "neg"]
    assert read_labels_table(with_header) == {"a": "pos", "b": "neg"}
    with pytest.raises(FormatError, match=r"record b has no label \(not in"):
        read_records(fasta, labels=_write(tmp_path / "n.tsv", "a\tpos\n"))
    with pytest.raises(UsageError, match="only for FASTA"):
        read_records(_write(tmp_path / "t.csv", "sequence,label\nA,1\n"), labels=without)


@pytest.fixture()
def reference(tmp_path):
    records = {"chr1": random_dna(300, seed=5), "chrM": random_dna(50, seed=6)}
    return write_fasta(tmp_path / "ref.fa", records), records


def test_bed_with_reference(tmp_path, reference):
    fasta, seqs = reference
    bed = _write(tmp_path / "r.bed", "track name=x\n1\t10\t20\tpos\nchr1\t5\t9\tneg\t0\t-\nMT\t0\t4\tpos\n")
    records = read_records(bed, fasta=str(fasta))
    assert [(r.id, r.label) for r in records] == [("1:11-20", "pos"), ("chr1:6-9", "neg"), ("MT:1-4", "pos")]
    assert records[0].sequence == seqs["chr1"][10:20]  # 0-based half-open; '1' resolved to 'chr1'
    assert records[1].sequence == reverse_complement(seqs["chr1"][5:9])  # strand '-'
    assert records[2].sequence == seqs["chrM"][0:4]  # MT resolved to chrM


def test_bed_label_column_by_header_or_number(tmp_path, reference):
    fasta, seqs = reference
    header = _write(tmp_path / "h.bed", "#chrom\tstart\tend\tname\tscore\tstrand\tlabel\nchr1\t0\t5\tr1\t0\t+\tA\n")
    record = read_records(header, fasta=str(fasta))[0]
    assert (record.id, record.label, record.sequence) == ("r1", "A", seqs["chr1"][:5])
    numbered = _write(tmp_path / "n.bed", "chr1\t0\t5\tr1\tB\n")
    assert read_records(numbered, fasta=str(fasta), columns=Columns(label="5"))[0].label == "B"
    with pytest.raises(UsageError, match="columns 1-3"):
        read_records(numbered, fasta=str(fasta), columns=Columns(label="2"))


def test_bed_unresolvable_rows_are_reported_not_fatal(tmp_path, reference):
    fasta, _ = reference
    bed = _write(tmp_path / "r.bed", "chr9\t0\t5\tx\nchr1\t290\t310\ty\n")
    problems = [r.problem for r in iter_records(bed, fasta=str(fasta), require_labels=False)]
    assert "contig chr9 not in the reference" in problems[0] and "beyond contig chr1" in problems[1]


def test_bed_from_plain_gzip_reference_matches_indexed(tmp_path, reference):
    fasta, _ = reference
    gz = tmp_path / "ref.fa.gz"
    with gzip.open(gz, "wb") as handle:  # plain gzip: not indexable, read in one pass
        handle.write(fasta.read_bytes())
    bed = _write(tmp_path / "r.bed", "chr1\t10\t20\ta\nchr1\t0\t300\tb\nchr1\t10\t20\tc\nchrM\t3\t9\td\n")
    indexed = [r.sequence for r in read_records(bed, fasta=str(fasta))]
    streamed = [r.sequence for r in read_records(bed, fasta=str(gz))]
    assert streamed == indexed and len(indexed[1]) == 300


def test_bed_errors(tmp_path, reference):
    fasta, _ = reference
    with pytest.raises(UsageError, match="--fasta"):
        read_records(_write(tmp_path / "a.bed", "chr1\t0\t5\tx\n"))
    with pytest.raises(FormatError, match=r"b\.bed:1: invalid or empty interval"):
        read_records(_write(tmp_path / "b.bed", "chr1\t5\t5\tx\n"), fasta=str(fasta))
    with pytest.raises(FormatError, match="missing label"):
        read_records(_write(tmp_path / "c.bed", "chr1\t0\t5\n"), fasta=str(fasta))


def test_class_names_and_indices():
    assert class_names(["10", "2", "1", "2"]) == ["1", "2", "10"]  # integers: numeric order
    assert class_names(["b", "a", "10"]) == ["10", "a", "b"]
    assert class_index(["2", "01", "7", "10"], ["1", "2", "10"]) == [1, 0, -1, 2]


def test_reverse_complement_keeps_case_and_iupac():
    assert reverse_complement("ACGTnR") == "YnACGT"
