"""zoomin_jax: Zoom-in-Net (Wang et al., MICCAI 2017) in JAX/Flax."""

__version__ = "0.1.0"
