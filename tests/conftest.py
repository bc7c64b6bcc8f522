"""Test set-up: 8 host CPU devices, forced before jax is imported anywhere."""

import os

# Subprocesses started by the tests pass these same flags on (tests/*: "XLA_FLAGS": os.environ["XLA_FLAGS"]).
# Not LLVM -O0 here, although it compiles ~25% faster: the tiny C-Net and joint stages' losses went non-finite
# under it (test_train, test_train_step), so in-process numerics stay those of the default build.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402

# As configs/default.py's prng_impl: much faster to compile parameter initialisation on CPU.
jax.config.update("jax_default_prng_impl", "rbg")

# One persistent compilation cache for the whole session, in-process and in every subprocess the tests start (they
# inherit the environment): the tiny config's steps compile once however many modules and processes build them.
# Fresh per session, so no test depends on what an earlier session left.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    _cache = tempfile.mkdtemp(prefix="zoomin_jax_test_cache_")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    jax.config.update("jax_compilation_cache_dir", _cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
