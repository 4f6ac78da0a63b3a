"""genomelm: DNA language models (HyenaDNA) for genomes, variants and pipelines."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "CharTokenizer", "HyenaConfig", "HyenaDNA", "load_model", "save_model"]


def __getattr__(name: str):
    # Lazy: `import genomelm` (and `genomelm --version`) must not pay for importing torch.
    if name == "CharTokenizer":
        from genomelm.tokenizer import CharTokenizer

        return CharTokenizer
    if name in ("HyenaConfig", "HyenaDNA"):
        from genomelm import model

        return getattr(model, name)
    if name in ("load_model", "save_model"):
        from genomelm.formats import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(f"module 'genomelm' has no attribute {name!r}")
