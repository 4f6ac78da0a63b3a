"""The device of the fused-kernel tests: the GPU, or the CPU through Triton's interpreter (TRITON_INTERPRET=1)."""

from __future__ import annotations

import os

import pytest
import torch

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def kernel_test_device() -> torch.device:
    """cuda when available, cpu under TRITON_INTERPRET=1; otherwise skips the calling test module."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if INTERPRET:
        return torch.device("cpu")
    pytest.skip("needs a CUDA GPU (or TRITON_INTERPRET=1)", allow_module_level=True)
