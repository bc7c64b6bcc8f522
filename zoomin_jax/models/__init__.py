"""Flax modules: the Inception-ResNet-v2 backbone and the M-Net / A-Net / C-Net zoom-in model."""
