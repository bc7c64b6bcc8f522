"""Paper scale: EyePACS at 1230 / 492, full Inception-ResNet-v2 M-Net and C-Net from ImageNet, bf16 compute.

Command:   python -m zoomin_jax.main --config=configs/full.py --workdir=runs/full \
               --config.data.manual_dir=/path/to/kaggle/diabetic-retinopathy-detection
           Needs Keras' ImageNet weights of Inception-ResNet-v2 without the top,
           inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5, in ~/.keras/models/ (where
           keras.applications.InceptionResNetV2(weights="imagenet", include_top=False) puts it) or at
           --config.init_from=/path/to/it. Without it the run stops at once, naming the file; --config.init_from=''
           trains from random weights instead (not the paper's recipe).
Hardware:  sized for 8 GPUs with 40+ GiB each on one host (global batch 32, 4 photographs per GPU); a TPU host
           (v4-8, v5p-8) runs it the same way on its chips.
Wall time: about half an hour on 8 H100s and a host with 32 free cores, set by JPEG decoding, not by the GPUs
           (estimated, not measured: no accelerator and no EyePACS here).
           GPU compute: ~2.7 min. XLA's cost analysis counts 514 GFLOP per photograph for a joint train step at
           these shapes (compiled; bench/train_step.py, below). bench/flops.py splits the other stages into
           backbone passes (M-Net's train step at 492 px 227 GFLOP, its forward 75.6; C-Net's train step on one
           294 px patch 68.8): about 227 (M-Net), 88 (A-Net), 363 (C-Net) and 514 (joint) GFLOP per photograph,
           4.96e17 FLOP for the 1.76 M photographs the four stages see, plus 1.5e16 for four stage-end evaluations
           of the 10,906 validation photographs with two test-time variants; at 40% of an H100's 989 TFLOP/s dense
           bf16 on each of 8 GPUs (3.2e15 FLOP/s) that is ~160 s:
             python bench/flops.py --config=configs/full.py --joint_gflop=514
           Input: decoding and augmenting a 1230 px photograph takes one CPU core 22-32 ms (31-46 per second; README,
           "Speed"), so 1.76 M photographs take 20-30 min on data.num_workers=32 worker processes; keeping the GPUs
           busy would take ~250-360 cores. Add a few minutes of compiling (one train step per stage, one eval step).
           The joint step at these shapes compiles and runs on a CPU too (bench/train_step.py's docstring has the
           command: float32, batch 2): on this project's 2-core machine, alone, with this config's CPU XLA flags,
           init 8.7 s (drawn on the host), compile 130 s, 13.5 s per step (a PyTorch Zoom-in-Net on timm: 13.2 s;
           bench/compare.py), 7.6 GiB peak RSS, 514 GFLOP per photograph.
Score:     not measured here (no accelerator, no EyePACS). The paper's Kaggle EyePACS quadratic weighted kappa,
           validation (public leaderboard, 10,906 photographs) / test (private, 42,670): M-Net 0.832 / 0.825,
           M-Net + A-Net 0.837 / 0.832, Zoom-in-Net 0.857 / 0.849. This run's stage-end evaluations print the same
           three rows on `validation`; `--mode=eval --split=test` gives the private part.

The recipe (ours where the paper is silent; README, "Choices that are ours"):
- Stages in epochs over the training split (35,126 photographs in Kaggle's trainLabels.csv), turned into steps at the
  start from the prepared split's size and the global batch (zoomin_jax/schedule.py): M-Net 25 epochs, A-Net 5 on
  the frozen M-Net, C-Net 15 on the frozen M-Net and A-Net, joint 5; at batch 32, 27,443, 5,489, 16,466 and 5,489
  steps.
- AdamW (weight decay 0.05, decoupled), gradients clipped at norm 1. AdamW rather than SGD: nobody could tune this
  recipe at scale here, and Adam's step size is the less sensitive to a learning rate that is off by a few times;
  the toy-scale runs that were measured use it too. Learning rates are those of fine-tuning an ImageNet network
  with Adam at batch 32 (2e-4 for the pretrained backbones and their fresh heads, 1e-3 for A-Net, which starts from
  scratch on frozen features, 3e-5 for the joint fine-tune); `optimizer.reference_batch = 32` rescales them by
  sqrt(batch / 32) when --config.batch_size changes (the square-root rule for Adam; schedule.lr_scale). Each stage
  warms up linearly over its first 5% (1.25 epochs of M-Net's stage, whatever the batch) and decays by cosine.
- The region map is the paper's gated map G = S * A. At toy scale A alone chose better boxes (synthetic, one
  checkpoint: 35% of the lesions vs 16%; IDRiD at 400 px: recall@4 0.44 vs 0.37, though G put the optic disc first
  in 2% of photographs vs 14%), but nothing was measured at this scale, where M-Net starts from ImageNet and the
  score maps S are far better trained; `--config.model.regions.map=attention` is the alternative.
- Graham's local-average subtraction at preparation (used by Kaggle's winning solution; on real IDRiD photographs
  it raised kappa 0.32 -> 0.54 and referable AUC 0.82 -> 0.89 at 400 px, issue 8).
- Class-balanced sampling, from balanced towards the true grade distribution by 0.7 per epoch (default.py); the
  evaluation averages the photograph and its mirror image.
"""

from configs import default

BATCH = 32  # global; 4 rows per accelerator on 8


def get_config():
    c = default.get_config()
    # XLA's CPU backend only (a GPU / TPU run ignores them): at paper width these two made the M-Net train step 2.5x
    # faster on a 2-core CPU (bench/compare.py; at the default config's width they are within noise).
    c.cpu_xla_flags = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution --xla_cpu_opt_preset=FAST_COMPILE"
    c.init_on_host = True  # random init without compiling: seconds, not a minute, before anything else starts
    d = c.data
    d.name = "eyepacs"
    d.graham = True
    d.eval_batch_size = 64
    d.eval_tta = ("identity", "flip_lr")
    d.num_workers = 32  # decode + augment worker processes per host: the pipeline, not the accelerators, sets the pace
    d.cache_gb = 0.0  # 88,000 photographs at 1230 px are 400 GB decoded: a per-worker cache would hold 0.5% of them
    m = c.model
    m.image_size = 1230
    m.low_res_size = 492
    m.dtype = "bfloat16"
    m.dropout = 0.2
    m.mnet.repeats, m.mnet.width = (10, 20, 10), 1.0
    m.cnet.repeats, m.cnet.width = (10, 20, 10), 1.0
    m.cnet.input_size = 0  # the paper's: C-Net sees the 294 px patch as cut
    m.anet.endpoint, m.anet.hidden = "conv_7b_ac", 256  # 14x14x1536 at 492: cells every 32 px at 492, 80 px at 1230
    m.regions.patch_size = 294  # C-Net's final map is 7x7
    m.regions.map = "gated"  # the paper's G = S * A (docstring)
    c.batch_size = BATCH

    for name, epochs, lr in (("mnet", 25, 2e-4), ("anet", 5, 1e-3), ("cnet", 15, 2e-4), ("joint", 5, 3e-5)):
        c.stages[name].epochs = float(epochs)
        c.stages[name].steps = 0  # from epochs, when training starts
        c.stages[name].lr = lr
    o = c.optimizer
    o.name = "adamw"
    o.weight_decay = 0.05
    o.clip_norm = 1.0
    o.warmup_fraction = 0.05
    o.final_lr_fraction = 0.01
    o.reference_batch = BATCH  # the lrs above are for this global batch

    c.init_from = "~/.keras/models/inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5"
    c.log_every = 50
    c.checkpoint_every = 1000
    return c
