"""HyenaDNA model: config, blocks, language model."""

from genomelm.model.config import PRESETS, HyenaConfig, preset
from genomelm.model.lm import HyenaDNA

__all__ = ["HyenaConfig", "HyenaDNA", "PRESETS", "preset"]
