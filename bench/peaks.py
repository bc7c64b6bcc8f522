"""Accelerator peaks for model-FLOP utilisation (no flags, no jax: importable anywhere)."""


# Dense bf16 peak of one device, TFLOP/s, by the device kind JAX reports (the vendors' data sheets; SXM parts).
BF16_PEAK_TFLOPS = {"H200": 989, "H100": 989, "A100": 312, "L4": 121, "TPU v4": 275, "TPU v5 lite": 197,
                    "TPU v5e": 197, "TPU v5p": 459, "TPU v5": 459, "TPU v6 lite": 918, "TPU v6e": 918}


def bf16_peak_tflops(device_kind: str) -> float | None:
    """The first entry of BF16_PEAK_TFLOPS whose name the device kind contains (longest names first)."""
    for name in sorted(BF16_PEAK_TFLOPS, key=len, reverse=True):
        if name.lower() in device_kind.lower():
            return BF16_PEAK_TFLOPS[name]
    return None
