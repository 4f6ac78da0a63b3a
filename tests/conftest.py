"""Shared fixtures: tiny models and small synthetic genomes (no network, no ../shared)."""

from __future__ import annotations

import random
import socket
import sys
from pathlib import Path

import pytest
import torch

from genomelm.formats.checkpoint import save_model
from genomelm.model import HyenaConfig, HyenaDNA

DATA = Path(__file__).parent / "data"


def tiny_config(**changes) -> HyenaConfig:
    """A model small enough for CPU tests: d_model 16, 2 layers, l_max 258."""
    values = dict(d_model=16, n_layer=2, d_inner=64, l_max=258, filter_order=16)
    values.update(changes)
    return HyenaConfig(**values)


def tiny_model(seed: int = 0, **changes) -> HyenaDNA:
    torch.manual_seed(seed)
    return HyenaDNA(tiny_config(**changes)).eval()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A native checkpoint directory holding a random tiny model."""
    return save_model(tiny_model(), tmp_path_factory.mktemp("models") / "tiny")


def random_dna(length: int, seed: int = 0, alphabet: str = "ACGT") -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(alphabet) for _ in range(length))


def write_fasta(path: Path, records: dict[str, str], line_width: int = 60) -> Path:
    with open(path, "w") as handle:
        for name, seq in records.items():
            handle.write(f">{name}\n")
            for i in range(0, len(seq), line_width):
                handle.write(seq[i : i + line_width] + "\n")
    return path


@pytest.fixture()
def one_thread(monkeypatch):
    """Tiny models run fastest on one thread, and extra threads spin on a loaded CI machine."""
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def free_port() -> int:
    """A TCP port nothing listens on now (for torchrun's rendezvous: fixed ports collide between runs)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(processes: int = 2) -> list[str]:
    """The command prefix of ``processes`` local torchrun workers, on a free rendezvous port."""
    launcher = [sys.executable, "-m", "torch.distributed.run"]
    return launcher + ["--nproc-per-node", str(processes), "--master-port", str(free_port())]
