"""Paper scale: EyePACS at 1230 / 492, full Inception-ResNet-v2 M-Net and C-Net, bf16 compute.

Command:   python -m zoomin_jax.main --config=configs/full.py --workdir=runs/full \
               --config.data.manual_dir=/path/to/kaggle/diabetic-retinopathy-detection
Hardware:  sized for 8 accelerators (one TPU v4-8 host or 8 GPUs with 40+ GiB each).
Compare with the paper (Kaggle EyePACS quadratic weighted kappa, validation / test): M-Net 0.832 / 0.825,
M-Net + A-Net 0.837 / 0.832, Zoom-in-Net 0.857 / 0.849.
"""

from configs import default


def get_config():
    c = default.get_config()
    c.data.name = "eyepacs"
    m = c.model
    m.image_size = 1230
    m.low_res_size = 492
    m.dtype = "bfloat16"
    m.dropout = 0.2
    m.mnet.repeats, m.mnet.width = (10, 20, 10), 1.0
    m.cnet.repeats, m.cnet.width = (10, 20, 10), 1.0
    m.anet.endpoint, m.anet.hidden = "conv_7b_ac", 256  # 14x14x1536 at 492: one cell = 88 px at 1230
    m.regions.patch_size = 294  # C-Net's final map is 7x7
    c.batch_size = 32
    return c
