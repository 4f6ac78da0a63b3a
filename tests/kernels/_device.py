"""The device of the fused-kernel tests: the GPU, or the CPU through Triton's interpreter (TRITON_INTERPRET=1).

Triton 3.6's interpreter cannot run a loop whose bound is a kernel argument (the cross-spectrum kernel's loop over
the batch) with numpy >= 2.3: int() of a one-element array is an error there. Put an older numpy first on the path
of an interpreted run, e.g. ``pip install --target /tmp/np "numpy<2.3"`` and ``PYTHONPATH=/tmp/np:...``.
"""

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
