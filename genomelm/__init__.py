"""genomelm: DNA language models (HyenaDNA) for genomes, variants and pipelines."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "CharTokenizer",
    "HyenaConfig",
    "HyenaDNA",
    "VariantScore",
    "embed_sequences",
    "load_model",
    "log_likelihood",
    "save_model",
    "score_variants",
]
_API = ("VariantScore", "embed_sequences", "log_likelihood", "score_variants")


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
    if name in _API:
        from genomelm import api

        return getattr(api, name)
    raise AttributeError(f"module 'genomelm' has no attribute {name!r}")
