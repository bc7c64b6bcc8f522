"""Test set-up: 8 host CPU devices, forced before jax is imported anywhere."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402

# As configs/default.py's prng_impl: much faster to compile parameter initialisation on CPU.
jax.config.update("jax_default_prng_impl", "rbg")
