"""Test setup: 8 simulated CPU devices (must be set before jax is imported) and shared fixtures."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


def torch_or_skip():
    """Imports torch or skips the calling test (parity tests need it; the library never does)."""
    return pytest.importorskip("torch", reason="torch is not installed; parity tests need `pip install torch==2.13.0`")
