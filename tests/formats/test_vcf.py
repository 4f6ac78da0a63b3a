"""genomelm.formats.vcf: reading, region selection, writing (text, bgzip, BCF, stdout), errors."""

import io
import logging

import pysam
import pytest

from genomelm.errors import FormatError, InputError, UsageError
from genomelm.formats import vcf
from genomelm.formats.fasta import Region

HEADER = (
    "##fileformat=VCFv4.2\n"
    "##contig=<ID=1,length=1000>\n"
    "##contig=<ID=2,length=1000>\n"
    '##INFO=<ID=DP,Number=1,Type=Integer,Description="depth">\n'
    '##INFO=<ID=END,Number=1,Type=Integer,Description="end">\n'  # htslib's BCF writer needs it for <NON_REF>
    "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
)
RECORDS = [
    "1\t5\trs1\tA\tG\t50\tPASS\tDP=3\n",
    "1\t7\t.\tC\tT,<NON_REF>\t.\t.\t.\n",
    "1\t20\t.\tCTT\tC\t.\t.\tDP=1\n",
    "2\t3\t.\tG\tA\t.\t.\tDP=4\n",
]


@pytest.fixture()
def plain(tmp_path):
    path = tmp_path / "in.vcf"
    path.write_text(HEADER + "".join(RECORDS))
    return path


def bgzip_indexed(path):
    out = str(path) + ".gz"
    pysam.tabix_compress(str(path), out, force=True)
    pysam.tabix_index(out, preset="vcf", force=True)
    return out


def body(path):
    """Record lines of any VCF/BCF, as htslib prints them."""
    with pysam.VariantFile(str(path)) as handle:
        return [str(r) for r in handle]


@pytest.mark.parametrize(
    "ref, alt, kind",
    [
        ("A", "G", vcf.SNV),
        ("a", "g", vcf.SNV),
        ("AC", "GT", vcf.MNV),
        ("ACT", "A", vcf.INDEL),
        ("A", "ATT", vcf.INDEL),
        ("A", "<DEL>", vcf.SYMBOLIC),
        ("A", "<*>", vcf.SYMBOLIC),
        ("A", "<NON_REF>", vcf.SYMBOLIC),
        ("A", "*", vcf.SPANNING_DELETION),
        ("G", "G]17:198982]", vcf.BREAKEND),
        ("T", "[13:123456[T", vcf.BREAKEND),
        ("A", ".A", vcf.BREAKEND),
        ("A", "A.", vcf.BREAKEND),
        ("A", None, vcf.NO_ALT),
        ("A", "N", vcf.UNSUPPORTED),
        ("N", "A", vcf.UNSUPPORTED),
        ("A", "R", vcf.UNSUPPORTED),
        ("A", "A", vcf.UNSUPPORTED),
    ],
)
def test_allele_kind(ref, alt, kind):
    assert vcf.allele_kind(ref, alt) == kind


def test_info_ids_are_checked():
    assert vcf.InfoField("GLM_LLR", "A", "Float", 'say "x"').header_line().endswith('Description="say \\"x\\"">')
    vcf.check_info_prefix("my.score_")
    for bad in ("1X_", "GLM-", "a b"):
        with pytest.raises(UsageError, match="--info-prefix"):
            vcf.check_info_prefix(bad)


@pytest.fixture()
def caplog(caplog, monkeypatch):
    """caplog that sees genomelm's records even after a CLI run set the package logger not to propagate."""
    logger = logging.getLogger("genomelm")
    monkeypatch.setattr(logger, "propagate", True)
    monkeypatch.setattr(logger, "handlers", [])
    return caplog


def test_contig_mapper_aliases_with_one_warning(caplog):
    mapper = vcf.ContigMapper(["chr1", "chr2", "chrM"])
    with caplog.at_level(logging.WARNING, logger="genomelm"):
        assert [mapper(n) for n in ("1", "2", "MT", "chr1", "3", "1")] == ["chr1", "chr2", "chrM", "chr1", None, "chr1"]
    assert len([r for r in caplog.records if "alias" in r.getMessage()]) == 1
    assert mapper.aliases == {"1": "chr1", "2": "chr2", "MT": "chrM"}


def test_reads_plain_bgzip_and_bcf_alike(plain, tmp_path):
    gz = bgzip_indexed(plain)
    bcf = tmp_path / "in.bcf"
    with pysam.VariantFile(str(plain)) as src, pysam.VariantFile(str(bcf), "wb", header=src.header) as dst:
        for record in src:
            dst.write(record)
    for path in (plain, gz, bcf):
        with vcf.VariantReader(str(path)) as reader:
            assert [r.pos for r in reader] == [5, 7, 20, 3]
            assert reader.contigs == ["1", "2"]


def test_regions_select_records_by_pos_merged_and_sorted(plain):
    gz = bgzip_indexed(plain)
    # The deletion at POS 20 spans 20-22: a region starting at 21 does not take it (its POS is outside).
    regions = [Region("2", 0, 10), Region("chr1", 0, 6), Region("1", 3, 7), Region("1", 20, 30)]
    with vcf.VariantReader(gz) as reader:
        assert [(r.chrom, r.pos) for r in reader.records(regions)] == [("1", 5), ("1", 7), ("2", 3)]


def test_regions_need_an_index(plain):
    with vcf.VariantReader(str(plain)) as reader, pytest.raises(UsageError, match="index"):
        list(reader.records([Region("1", 0, 10)]))


def test_merge_regions():
    merged = vcf.merge_regions(
        [Region("b", 5, 9), Region("a", 10, 20), Region("a", 0, 10), Region("b", 0, 2), Region("a", 30, None)],
        ["a", "b"],
    )
    assert merged == [Region("a", 0, 20), Region("a", 30, None), Region("b", 0, 2), Region("b", 5, 9)]


@pytest.mark.parametrize(
    "content, error, message",
    [
        ("1\t5\t.\tA\tG\t.\t.\t.\n", FormatError, "header"),
        ("", FormatError, "header"),
        (HEADER + RECORDS[0] + "1\tx5\t.\tA\n" + RECORDS[3], FormatError, "after 1:5"),
    ],
)
def test_bad_input_is_a_one_line_format_error(tmp_path, content, error, message):
    path = tmp_path / "bad.vcf"
    path.write_text(content)
    with pytest.raises(error, match=message) as info:
        with vcf.VariantReader(str(path)) as reader:
            list(reader)
    assert "\n" not in str(info.value)


def test_missing_and_truncated_files(plain, tmp_path):
    with pytest.raises(InputError, match="not found"):
        vcf.VariantReader(str(tmp_path / "nope.vcf"))
    data = open(bgzip_indexed(plain), "rb").read()
    (tmp_path / "t.vcf.gz").write_bytes(data[:-28])  # drop the BGZF end-of-file block
    with pytest.raises(FormatError, match="truncated"):
        with vcf.VariantReader(str(tmp_path / "t.vcf.gz")) as reader:
            list(reader)


def test_stdin_without_file_descriptor_is_spooled(plain, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(plain.read_bytes())))
    with vcf.VariantReader("-") as reader:
        assert [r.pos for r in reader] == [5, 7, 20, 3]


@pytest.mark.parametrize("name, kind", [("o.vcf", "vcf"), ("o.vcf.gz", "vcf.gz"), ("o.bcf", "bcf"), ("-", "vcf")])
def test_output_format(name, kind):
    assert vcf.output_format(name) == kind


def test_output_format_unknown_suffix():
    with pytest.raises(UsageError, match=".vcf.gz"):
        vcf.output_format("out.txt")


@pytest.mark.parametrize("name, index_suffix", [("o.vcf", None), ("o.vcf.gz", ".tbi"), ("o.bcf", ".csi")])
def test_writer_round_trip_with_added_info(plain, tmp_path, name, index_suffix):
    out = tmp_path / name
    with vcf.VariantReader(str(plain)) as reader:
        assert reader.add_info([vcf.InfoField("X_S", "A", "Float", "score")]) is False
        reader.add_meta("source_program", "test")
        with vcf.VariantWriter(str(out), reader, index=index_suffix is not None) as writer:
            for record in reader:
                vcf.set_info(record, {"X_S": tuple(0.5 for _ in record.alts), "DP": None})
                writer.write(record)
    lines = body(out)
    assert len(lines) == 4 and all("X_S=0.5" in line for line in lines)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    if index_suffix:
        assert (tmp_path / (name + index_suffix)).exists()
        with pysam.VariantFile(str(out)) as handle:
            assert [r.pos for r in handle.fetch("1", 4, 10)] == [5, 7]


@pytest.mark.parametrize("threads", [0, 2])
def test_bgzip_output_is_bgzip_of_the_text_output(plain, tmp_path, threads):
    """.vcf.gz bytes: bgzip's (tabix_compress) of the .vcf text, with or without compression threads,
    over many blocks (records written one by one and as lines)."""
    outputs = {}
    for name in ("o.vcf", "o.vcf.gz"):
        with vcf.VariantReader(str(plain)) as reader:
            with vcf.VariantWriter(str(tmp_path / name), reader, compress_threads=threads) as writer:
                records = list(reader)
                for _ in range(3000):
                    writer.write_lines([str(r) for r in records], 20)
                writer.write(records[0])
        outputs[name] = (tmp_path / name).read_bytes()
    pysam.tabix_compress(str(tmp_path / "o.vcf"), str(tmp_path / "ref.gz"))
    assert len(outputs["o.vcf"]) > 4 * (1 << 16) and outputs["o.vcf.gz"] == (tmp_path / "ref.gz").read_bytes()


def test_writer_abort_leaves_nothing(plain, tmp_path):
    out = tmp_path / "o.vcf.gz"
    with pytest.raises(RuntimeError), vcf.VariantReader(str(plain)) as reader:
        with vcf.VariantWriter(str(out), reader, index=True) as writer:
            writer.write(next(iter(reader)))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == [plain]


def test_writer_to_stdout_and_stale_index_removed(plain, tmp_path):
    stream = io.StringIO()
    with vcf.VariantReader(str(plain)) as reader, vcf.VariantWriter("-", reader, stdout=stream) as writer:
        for record in reader:
            writer.write(record)
    assert stream.getvalue().count("\n#CHROM") == 1 and stream.getvalue().endswith(RECORDS[-1])
    out = tmp_path / "o.vcf.gz"
    (tmp_path / "o.vcf.gz.tbi").write_text("stale")
    with vcf.VariantReader(str(plain)) as reader, vcf.VariantWriter(str(out), reader) as writer:
        writer.write(next(iter(reader)))
    assert not (tmp_path / "o.vcf.gz.tbi").exists()


def test_index_of_unsorted_records_fails_cleanly(plain, tmp_path):
    out = tmp_path / "o.vcf.gz"
    with pytest.raises(FormatError, match="sorted"), vcf.VariantReader(str(plain)) as reader:
        records = list(reader)
        with vcf.VariantWriter(str(out), reader, index=True) as writer:
            for record in reversed(records):
                writer.write(record)
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_bcf_declares_contigs_the_records_use_undeclared(tmp_path):
    # issue 13: BCF output accepts what text output accepts; its header (written last) declares the contig
    path = tmp_path / "nocontig.vcf"
    path.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n1\t5\t.\tA\tG\t.\t.\t.\n")
    for name in ("o.bcf", "o.vcf"):
        with vcf.VariantReader(str(path)) as reader, vcf.VariantWriter(str(tmp_path / name), reader) as writer:
            for record in reader:
                writer.write(record)
    assert body(tmp_path / "o.vcf") == ["1\t5\t.\tA\tG\t.\t.\t.\n"]
    with pysam.VariantFile(str(tmp_path / "o.bcf")) as bcf:
        assert list(bcf.header.contigs) == ["1"] and [str(r) for r in bcf] == body(tmp_path / "o.vcf")


def test_add_info_again_and_clash(plain):
    with vcf.VariantReader(str(plain)) as reader:
        field = vcf.InfoField("X_S", "A", "Float", "score")
        assert reader.add_info([field]) is False
        assert reader.add_info([field]) is True
        with pytest.raises(UsageError, match="already declared"):
            reader.add_info([vcf.InfoField("DP", "A", "Float", "clash")])


def test_index_needs_a_compressed_output(plain):
    with vcf.VariantReader(str(plain)) as reader, pytest.raises(UsageError, match="--index"):
        vcf.VariantWriter("o.vcf", reader, index=True)


def test_tsv_writer(tmp_path):
    with vcf.TsvWriter(str(tmp_path / "t.tsv"), ["a", "b", "c"]) as tsv:
        tsv.row(["1", 0.123456789, None])
    assert (tmp_path / "t.tsv").read_text() == "a\tb\tc\n1\t0.123457\tNA\n"
    assert [p.name for p in tmp_path.iterdir()] == ["t.tsv"]
