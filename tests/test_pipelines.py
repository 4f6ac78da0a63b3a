"""Pipeline-grade behaviour: the Snakemake workflow run for real, the Nextflow modules' command lines,
and what every subcommand owes a workflow manager (threads, version, exit codes, stdout, signals,
identical reruns, $GENOMELM_HOME)."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pysam
import pytest
import torch
import typer.main
from safetensors import safe_open
from typer.testing import CliRunner

import genomelm
from genomelm.cli import app
from genomelm.commands import embed, score_genome, score_variants
from genomelm.errors import UsageError
from genomelm.formats import checkpoint
from genomelm.formats.checkpoint import load_model, save_model
from genomelm.runtime import set_threads
from tests.conftest import random_dna, tiny_model, write_fasta

ROOT = Path(__file__).resolve().parent.parent
SNAKEMAKE = ROOT / "examples" / "snakemake"
NEXTFLOW = ROOT / "examples" / "nextflow"
runner = CliRunner()


def _load_script(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


vcf_shards = _load_script(SNAKEMAKE / "scripts" / "vcf_shards.py")
make_vcf = _load_script(SNAKEMAKE / "scripts" / "make_vcf.py")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A two-contig genome, a sorted bgzipped + indexed VCF of ~70 mixed variants, a tiny model."""
    root = tmp_path_factory.mktemp("pipeline")
    fasta = write_fasta(root / "ref.fa", {"chr2": random_dna(1500, seed=11), "chr1": random_dna(1100, seed=12)})
    lengths, lines = make_vcf.make_records(str(fasta), 60, seed=3)
    make_vcf.write(str(root / "calls.vcf.gz"), make_vcf.header(lengths, str(fasta)) + "".join(lines))
    model = save_model(tiny_model(), root / "tiny")
    return {"root": root, "fasta": fasta, "vcf": root / "calls.vcf.gz", "model": model}


def body(path) -> list[str]:
    with pysam.BGZFile(str(path), "rb") as handle:
        return [line for line in handle.read().decode().splitlines() if not line.startswith("#")]


def genomelm_wrapper(directory: Path) -> Path:
    """A `genomelm` on PATH that runs this checkout with this interpreter (workflows call it by name)."""
    directory.mkdir(exist_ok=True)
    script = directory / "genomelm"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m genomelm "$@"\n')
    script.chmod(0o755)
    return directory


# --------------------------------------------------------------------------- scatter / gather helper


def test_plan_cuts_runs_of_records_and_never_splits_a_position(data, tmp_path):
    shards = vcf_shards.plan(str(data["vcf"]), 4)
    keys = [vcf_shards.record_key(line)[:2] for line in body(data["vcf"])]
    owner = [
        [i for i, shard in enumerate(shards) for c, s, e in shard if c == chrom and s <= pos - 1 < e]
        for chrom, pos in keys
    ]
    assert all(len(o) == 1 for o in owner), "every record belongs to exactly one shard"
    assert [o[0] for o in owner] == sorted(o[0] for o in owner), "shards are consecutive runs in file order"
    assert len({o[0] for o in owner}) == 4
    # Same-position records (split multi-allelic sites) must share a shard.
    same_site = [i for i in range(1, len(keys)) if keys[i] == keys[i - 1]]
    assert same_site and all(owner[i] == owner[i - 1] for i in same_site)


def test_more_shards_than_positions_leaves_trailing_shards_empty(tmp_path):
    vcf = tmp_path / "few.vcf"
    vcf.write_text(
        "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n" + "c\t5\t.\tA\tC\t.\t.\t.\n" * 2
    )
    assert vcf_shards.plan(str(vcf), 3) == [[("c", 4, 5)], [], []]


def test_unsorted_vcf_is_refused(tmp_path):
    vcf = tmp_path / "unsorted.vcf"
    rows = ["a\t9\t.\tA\tC\t.\t.\t.", "b\t1\t.\tA\tC\t.\t.\t.", "a\t20\t.\tA\tC\t.\t.\t."]
    vcf.write_text("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n" + "\n".join(rows) + "\n")
    with pytest.raises(vcf_shards.ShardError, match="not sorted"):
        vcf_shards.plan(str(vcf), 2)


def test_gather_drops_records_a_shard_does_not_own_and_detects_losses(data, tmp_path):
    beds = [tmp_path / f"{i}.bed" for i in range(3)]
    for path, regions in zip(beds, vcf_shards.plan(str(data["vcf"]), 3)):
        vcf_shards.write_bed(str(path), regions)
    # Every "shard" is the whole input: gather keeps each record once, from the shard that owns it.
    out = tmp_path / "out.vcf.gz"
    args = ["gather", "--input", str(data["vcf"]), "--beds", *map(str, beds), "-o", str(out)]
    assert vcf_shards.main(args + [str(data["vcf"])] * 3) == 0
    assert body(out) == body(data["vcf"]) and (tmp_path / "out.vcf.gz.tbi").exists()
    lost = tmp_path / "lost.vcf.gz"
    args = ["gather", "--input", str(data["vcf"]), "--beds", str(beds[0]), str(beds[2]), "-o", str(lost)]
    assert vcf_shards.main(args + [str(data["vcf"])] * 2) == 1
    assert not lost.exists() and sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


# --------------------------------------------------------------------------- Snakemake, for real


def _snakemake_config(data, workdir: Path, vcf: Path) -> Path:
    config = workdir / "config.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            fasta: {data["fasta"]}
            vcf: {vcf}
            model: {data["model"]}
            shards: 4
            threads: 1
            score_args: "--batch-size 4 --method llr --method delta-ll --window 64"
            embed_args: "--window 128"
            genomelm: "{sys.executable} -m genomelm"
            python: "{sys.executable}"
            outdir: results
            """
        )
    )
    return config


@pytest.mark.slow
@pytest.mark.skipif(sys.version_info < (3, 11), reason="Snakemake 8+ needs Python >= 3.11")
def test_snakemake_scatter_score_gather_equals_one_unsharded_run(data, tmp_path):
    pytest.importorskip("snakemake", reason="install the [dev] extra")
    plain = tmp_path / "calls.vcf"  # a plain VCF: the workflow bgzips and indexes it first
    plain.write_text("".join(vcf_shards.header_and_body(str(data["vcf"]))[0]) + "\n".join(body(data["vcf"])) + "\n")
    config = _snakemake_config(data, tmp_path, plain)
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEMAKE / "Snakefile"), "--cores", "2"]
    command += ["--directory", str(tmp_path), "--configfile", str(config), "--quiet", "all"]  # target: rule all
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    gathered = tmp_path / "results" / "calls.scored.vcf.gz"
    whole = tmp_path / "whole.vcf.gz"
    score_variants.run(
        score_variants.ScoreVariantsOptions(
            input=str(data["vcf"]),
            fasta=str(data["fasta"]),
            output=str(whole),
            model=str(data["model"]),
            methods=["llr", "delta-ll"],
            window=64,
            batch_size=4,
            threads=1,
        )
    )
    assert_same_records(body(gathered), body(whole))
    assert sum("GLM_DLL=" in line for line in body(whole)) > sum("GLM_LLR=" in line for line in body(whole))
    assert len(body(gathered)) == len(body(data["vcf"])) > 50
    with pysam.VariantFile(str(gathered)) as scored:  # bgzipped + indexed: region queries work
        assert "GLM_LLR" in scored.header.info
        assert len(list(scored.fetch("chr1"))) == sum(line.startswith("chr1\t") for line in body(whole))
    _check_snakemake_embeddings(data, tmp_path / "results" / "ref.embeddings.safetensors", tmp_path)
    _check_snakemake_genome(data, tmp_path / "results" / "ref.scores", tmp_path)


def _check_snakemake_genome(data, gathered: Path, tmp_path: Path) -> None:
    """score-genome one contig per job, gathered: the files of one unsharded run, byte for byte."""
    whole = tmp_path / "whole-scores"
    score_genome.run(
        score_genome.ScoreGenomeOptions(fasta=str(data["fasta"]), output=str(whole), model=str(data["model"]))
    )
    names = sorted(p.name for p in whole.iterdir())
    produced = sorted(p.name for p in gathered.iterdir() if p.name != ".snakemake_timestamp")
    assert names == produced and "llr_A.bw" in names
    files = sorted(str(p.relative_to(whole)) for p in whole.rglob("*") if p.is_file())
    assert "lookup/0000000.npy" in files
    for name in files:
        if name != "manifest.json":
            assert (gathered / name).read_bytes() == (whole / name).read_bytes(), name
    assert not (tmp_path / "results" / "genome_shards").exists() or not any(
        (tmp_path / "results" / "genome_shards").iterdir()
    )


def _check_snakemake_embeddings(data, produced: Path, tmp_path: Path) -> None:
    direct = tmp_path / "direct.safetensors"
    embed.run(embed.EmbedOptions(fasta=str(data["fasta"]), output=str(direct), model=str(data["model"]), window=128))
    with safe_open(str(produced), "np") as a, safe_open(str(direct), "np") as b:
        assert a.keys() == b.keys()
        for key in a.keys():
            np.testing.assert_allclose(a.get_tensor(key), b.get_tensor(key), atol=1e-6)
        assert a.metadata()["contigs"] == '["chr2", "chr1"]'


def assert_same_records(got: list[str], expected: list[str], atol: float = 1e-5) -> None:
    """Record for record: every column equal, INFO keys and texts equal, INFO numbers equal to float rounding.

    A shard recomputes the model passes of an llr block the shards share with passes of another
    length (a pass ends at the block's last variant), which moves the 7th significant digit.
    """
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.split("\t")[:7] == b.split("\t")[:7]
        info_a, info_b = _info(a), _info(b)
        assert info_a.keys() == info_b.keys()
        for key in info_a:
            for x, y in zip(info_a[key].split(","), info_b[key].split(","), strict=True):
                assert _close(x, y, atol), f"{key}: {x} vs {y}\n{a}\n{b}"


def _info(line: str) -> dict[str, str]:
    return dict(item.split("=", 1) if "=" in item else (item, "") for item in line.split("\t")[7].split(";"))


def _close(x: str, y: str, atol: float) -> bool:
    try:
        return abs(float(x) - float(y)) <= atol * (1 + abs(float(y)))  # VCF text keeps 6 significant digits
    except ValueError:  # '.', a flag, a skip reason: text must match exactly
        return x == y


# --------------------------------------------------------------------------- Nextflow modules


class Groovy:
    """Just enough Groovy to render an nf-core module's script block: `def x = ...` lines using
    `a ?: b`, `c ? d : e`, quoted strings and dotted names, and GString interpolation."""

    def __init__(self, variables: dict):
        self.vars = dict(variables)

    def lookup(self, dotted: str):
        root, *rest = dotted.split(".")
        value = self.vars[root]  # an unknown variable is a bug in the module: KeyError
        for part in rest:
            value = value.get(part) if isinstance(value, dict) else getattr(value, part, None)
        return value

    def expr(self, text: str):
        text = text.strip()
        if "?:" in text:
            left, right = text.split("?:", 1)
            return self.expr(left) or self.expr(right)
        ternary = re.fullmatch(r"(\S+)\s*\?\s*(.+?)\s*:\s*(.+)", text)
        if ternary:
            return self.expr(ternary[2]) if self.expr(ternary[1]) else self.expr(ternary[3])
        if text[0] == text[-1] == "'":
            return text[1:-1]
        if text[0] == text[-1] == '"':
            return self.interpolate(text[1:-1])
        return self.lookup(text)

    def interpolate(self, text: str) -> str:
        def value(match: re.Match) -> str:
            if match[0] == "\\\\":
                return "\\"
            if match[0] == "\\$":
                return "$"
            found = self.lookup(match[1] or match[2])
            return "" if found in (None, []) else str(found)

        return re.sub(r"\\\\|\\\$|\$\{([^}]+)\}|\$([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)", value, text)

    def render(self, section: str) -> str:
        """Evaluate the `def` lines of a script:/stub: section and return its shell script."""
        head, script, _ = section.split('"""', 2)
        for line in head.splitlines():
            match = re.fullmatch(r"\s*def\s+(\w+)\s*=\s*(.+?)\s*", line)
            if match:
                self.vars[match[1]] = self.expr(match[2])
        return textwrap.dedent(self.interpolate(script)).strip() + "\n"  # Nextflow strips the indent too


def module_sections(path: Path) -> dict[str, str]:
    text = path.read_text()
    sections = re.split(r"^\s*(input|output|when|script|stub):\s*$", text, flags=re.M)
    return dict(zip(sections[1::2], sections[2::2]))


def run_module_script(script: str, workdir: Path, bindir: Path) -> subprocess.CompletedProcess:
    (workdir / ".command.sh").write_text(script)
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", "-euo", "pipefail", ".command.sh"], cwd=workdir, env=env, capture_output=True, text=True, timeout=120
    )


def stage(workdir: Path, *paths: Path) -> None:
    """Link the inputs into the task directory by name, as Nextflow does."""
    workdir.mkdir(parents=True, exist_ok=True)
    for path in paths:
        (workdir / path.name).symlink_to(path)


def check_outputs(section: str, workdir: Path) -> None:
    for pattern in re.findall(r'path\("([^"]+)"\)', section):
        assert list(workdir.glob(pattern)), f"no file matches the declared output {pattern!r}"


def check_versions(workdir: Path, process: str) -> None:
    text = (workdir / "versions.yml").read_text()
    assert text == f'"{process}":\n    genomelm: {genomelm.__version__}\n'


def task(process: str, cpus: int, args: str, prefix: str | None = None) -> dict:
    return {"cpus": cpus, "process": process, "ext": {"args": args, "prefix": prefix}}


def test_nextflow_score_variants_module_command_runs(data, tmp_path):
    path = NEXTFLOW / "modules" / "local" / "genomelm" / "scorevariants" / "main.nf"
    sections = module_sections(path)
    assert "tuple val(meta), path(vcf), path(tbi)" in sections["input"]
    work = tmp_path / "work"
    stage(work, data["vcf"], Path(f"{data['vcf']}.tbi"), data["fasta"], data["model"])
    groovy = Groovy(
        {
            "meta": {"id": "calls"},
            "task": task("GENOMELM_SCOREVARIANTS", 2, "--method llr --method delta-ll --window 64"),
            "vcf": data["vcf"].name,
            "tbi": f"{data['vcf'].name}.tbi",
            "fasta": data["fasta"].name,
            "fai": [],
            "model": data["model"].name,
        }
    )
    script = groovy.render(sections["script"])
    assert "--threads 2" in script and "--model tiny" in script and "--output calls.scored.vcf.gz" in script
    done = run_module_script(script, work, genomelm_wrapper(tmp_path / "bin"))
    assert done.returncode == 0, done.stderr
    check_outputs(sections["output"], work)
    check_versions(work, "GENOMELM_SCOREVARIANTS")
    with pysam.VariantFile(str(work / "calls.scored.vcf.gz")) as scored:
        assert {"GLM_LLR", "GLM_DLL"} <= set(scored.header.info)
        assert sum(1 for _ in scored) == len(body(data["vcf"]))


def test_nextflow_embed_module_command_runs(data, tmp_path):
    path = NEXTFLOW / "modules" / "local" / "genomelm" / "embed" / "main.nf"
    sections = module_sections(path)
    assert "tuple val(meta), path(fasta)" in sections["input"]
    work = tmp_path / "work"
    stage(work, data["fasta"], data["model"])
    variables = {"meta": {"id": "ref"}, "fasta": data["fasta"].name, "model": data["model"].name}
    script = Groovy({**variables, "task": task("GENOMELM_EMBED", 1, "--window 128 --rc", prefix="ref.w128")}).render(
        sections["script"]
    )
    assert "--threads 1" in script
    done = run_module_script(script, work, genomelm_wrapper(tmp_path / "bin"))
    assert done.returncode == 0, done.stderr
    check_outputs(sections["output"], work)
    check_versions(work, "GENOMELM_EMBED")
    with safe_open(str(work / "ref.w128.safetensors"), "np") as f:
        assert f.get_tensor("embeddings").shape == (12 + 9, 16) and set(f.get_tensor("strand")) == {0}


@pytest.mark.parametrize("module", ["scorevariants", "embed"])
def test_nextflow_stub_blocks_make_every_declared_output(tmp_path, module):
    sections = module_sections(NEXTFLOW / "modules" / "local" / "genomelm" / module / "main.nf")
    process = f"GENOMELM_{module.upper()}"
    script = Groovy({"meta": {"id": "x"}, "task": task(process, 1, "")}).render(sections["stub"])
    tmp_path.mkdir(exist_ok=True)
    done = run_module_script(script, tmp_path, genomelm_wrapper(tmp_path / "bin"))
    assert done.returncode == 0, done.stderr
    check_outputs(sections["output"], tmp_path)
    check_versions(tmp_path, process)


def test_nextflow_main_includes_both_modules():
    main = (NEXTFLOW / "main.nf").read_text()
    for name, relative in re.findall(r"include \{ (\w+)\s*\} from '([^']+)'", main):
        module = (NEXTFLOW / relative).with_suffix(".nf")
        assert module.exists() and f"process {name} {{" in module.read_text()
        assert f"{name}(" in main
    assert {"GENOMELM_SCOREVARIANTS", "GENOMELM_EMBED"} <= set(re.findall(r"include \{ (\w+)", main))
    config = (NEXTFLOW / "nextflow.config").read_text()
    assert "withName: 'GENOMELM_SCOREVARIANTS'" in config and "accelerator" in config


# --------------------------------------------------------------------------- every subcommand


def test_version_is_bare_and_answers_without_torch():
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from genomelm.cli import main; sys.argv = ['genomelm', '--version']; "
         "import atexit; atexit.register(lambda: print('torch' in sys.modules, file=sys.stderr)); main()"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0
    assert (
        re.fullmatch(r"\d+\.\d+\.\d+([.+-]?[0-9A-Za-z.]+)?\n", done.stdout)
        and done.stdout.strip() == genomelm.__version__
    )
    assert done.stderr.strip() == "False"


def test_every_subcommand_takes_threads():
    commands = typer.main.get_command(app).commands
    missing = [name for name, command in commands.items() if "threads" not in {p.name for p in command.params}]
    assert {"embed", "score-variants"} <= set(commands) and missing == []


def test_set_threads_caps_torch_and_the_openmp_environment(monkeypatch):
    before = torch.get_num_threads()
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.setenv(name, "7")
    try:
        set_threads(1)
        assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == os.environ["MKL_NUM_THREADS"] == "1"
    finally:
        torch.set_num_threads(before)
    with pytest.raises(UsageError, match="--threads"):
        set_threads(0)


def test_exit_codes_and_stdout_stay_clean(data, tmp_path):
    out = tmp_path / "o.vcf.gz"
    base = ["score-variants", str(data["vcf"]), "--fasta", str(data["fasta"]), "-o", str(out), "--model"]
    assert runner.invoke(app, base + [str(data["model"]), "--threads", "0"]).exit_code == 2
    assert runner.invoke(app, [*base[:1], str(tmp_path / "missing.vcf"), *base[2:], str(data["model"])]).exit_code == 1
    missing_fasta = ["embed", str(tmp_path / "missing.fa"), "-o", str(tmp_path / "e.st"), "--model", str(data["model"])]
    assert runner.invoke(app, missing_fasta).exit_code == 1
    command = [sys.executable, "-m", "genomelm", *base, str(data["model"]), "--threads", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout == "" and "scored" in done.stderr  # data in the file, logs on stderr


def test_identical_outputs_run_to_run(data, tmp_path):
    outputs = {}
    for run in (1, 2):  # the same commands (their command lines are part of the outputs' provenance)
        emb, vcf = tmp_path / "e.safetensors", tmp_path / "v.vcf.gz"
        args = ["--model", str(data["model"]), "--threads", "1"]
        result = runner.invoke(app, ["embed", str(data["fasta"]), "-o", str(emb), "--window", "100", *args])
        assert result.exit_code == 0, result.output
        inputs = [str(data["vcf"]), "-f", str(data["fasta"])]
        result = runner.invoke(app, ["score-variants", *inputs, "-o", str(vcf), "--index", *args])
        assert result.exit_code == 0, result.output
        outputs[run] = [emb.read_bytes(), vcf.read_bytes(), Path(f"{vcf}.tbi").read_bytes()]
    assert outputs[1] == outputs[2]


def test_presets_draw_the_same_random_weights_every_run():
    # Every shard job of a workflow run with `--model PRESET` must score with the same model.
    torch.manual_seed(1)
    untouched = torch.rand(1)
    torch.manual_seed(1)
    first, after = load_model("tiny-1k").state_dict(), torch.rand(1)
    second = load_model("tiny-1k").state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert torch.equal(after, untouched)  # the caller's random stream is left alone


def test_broken_pipe_on_stdout_ends_quietly(data, tmp_path):
    # Far more output than a pipe buffers (64 kB), so writing goes on after `head` has left.
    header, lines = vcf_shards.header_and_body(str(data["vcf"]))
    records = [line.replace("\tv", "\t" + "x" * 200, 1) for line in lines for _ in range(20)]
    big = tmp_path / "big.vcf"
    big.write_text("".join(header) + "".join(records))
    command = f"{sys.executable} -m genomelm score-variants {big} -f {data['fasta']} -o - --model {data['model']} --threads 1 | head -1"  # noqa: E501
    done = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout == "##fileformat=VCFv4.2\n"
    assert "Error" not in done.stderr and "Traceback" not in done.stderr and "Exception" not in done.stderr


def test_sigterm_cleans_up_and_exits_143(tmp_path):
    fasta = write_fasta(tmp_path / "big.fa", {"c": random_dna(400_000, seed=5)})
    model = save_model(tiny_model(), tmp_path / "tiny")
    out = tmp_path / "out" / "e.safetensors"
    out.parent.mkdir()
    command = [sys.executable, "-m", "genomelm", "embed", str(fasta), "-o", str(out), "--model", str(model)]
    process = subprocess.Popen(command + ["-b", "1", "--threads", "1"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any(out.parent.iterdir()) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the writer's temporary files appear once the work has started
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    assert "terminated" in stderr and list(out.parent.iterdir()) == []


# --------------------------------------------------------------------------- $GENOMELM_HOME


def test_genomelm_home_holds_named_models(tmp_path, monkeypatch):
    monkeypatch.setenv("GENOMELM_HOME", str(tmp_path / "home"))
    save_model(tiny_model(seed=1), tmp_path / "home" / "models" / "mine")
    save_model(tiny_model(seed=2), tmp_path / "home" / "models" / "tiny-1k")  # a trained copy beats the preset
    save_model(tiny_model(seed=3), tmp_path / "home" / "models" / "org" / "dna")  # works offline
    assert load_model("mine").config.d_model == 16
    assert load_model("tiny-1k").config.d_model == 16
    assert load_model("org/dna").config.d_model == 16
    assert checkpoint.named_model_dir("../home") is None
    monkeypatch.delenv("GENOMELM_HOME")
    with pytest.raises(UsageError, match="GENOMELM_HOME"):
        load_model("mine")
    assert load_model("tiny-1k").config.d_model == 128


def test_genomelm_home_receives_hub_downloads(tmp_path, monkeypatch):
    calls = []
    model_dir = save_model(tiny_model(), tmp_path / "snapshot")

    def snapshot_download(repo_id, cache_dir=None, allow_patterns=None):
        calls.append((repo_id, cache_dir))
        return str(model_dir)

    hub = type(sys)("huggingface_hub")
    hub.snapshot_download = snapshot_download
    monkeypatch.setitem(sys.modules, "huggingface_hub", hub)
    load_model("org/remote")
    monkeypatch.setenv("GENOMELM_HOME", str(tmp_path / "home"))
    load_model("org/remote")
    assert calls == [("org/remote", None), ("org/remote", str(tmp_path / "home" / "hub"))]


def test_cli_resolves_home_models_and_moves_the_triton_cache(data, tmp_path, monkeypatch):
    home = tmp_path / "home"
    shutil.copytree(data["model"], home / "models" / "team-model")
    monkeypatch.setenv("GENOMELM_HOME", str(home))
    monkeypatch.setenv("TRITON_CACHE_DIR", "placeholder")
    monkeypatch.delenv("TRITON_CACHE_DIR")  # unset now; monkeypatch restores the original afterwards
    out = tmp_path / "e.safetensors"
    result = runner.invoke(
        app, ["embed", str(data["fasta"]), "-o", str(out), "--model", "team-model", "--threads", "1"]
    )
    assert result.exit_code == 0, result.output
    assert os.environ["TRITON_CACHE_DIR"] == str(home / "triton")


def test_exit_after_torch_skips_teardown_but_runs_atexit_and_keeps_the_status(tmp_path):
    """main() leaves with os._exit once a command that loaded torch is done: atexit handlers still run, buffered
    stdout is flushed, the exit status is the command's; module teardown (which deletes __main__'s globals) is not.
    The same witness does report teardown after --version, which never loads torch."""
    code = (
        "import atexit, sys\n"
        "from genomelm.cli import main\n"
        "class Witness:\n"
        "    def __del__(self): print('teardown', file=sys.stderr)\n"
        "w = Witness()\n"
        "atexit.register(print, 'atexit ran', file=sys.stderr)\n"
        "print('buffered', end='')\n"
        "sys.argv = ['genomelm', *sys.argv[1:]]\n"
        "main()\n"
    )
    missing, out = tmp_path / "missing.fa", tmp_path / "out.safetensors"
    args = ["embed", str(missing), "-o", str(out)]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert done.stdout == "buffered"
    assert "FASTA not found" in done.stderr and "atexit ran" in done.stderr
    assert "teardown" not in done.stderr
    bare = subprocess.run([sys.executable, "-c", code, "--version"], capture_output=True, text=True, timeout=60)
    assert bare.returncode == 0 and "atexit ran" in bare.stderr and "teardown" in bare.stderr
