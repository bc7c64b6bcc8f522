"""Default config: the whole schema, sized for a 2-core CPU on the synthetic fundus dataset.

Command:   python -m zoomin_jax.main --config=configs/default.py --workdir=runs/default
Hardware:  2 CPU cores, 24 GiB (no accelerator).
Wall time / score: README, "The default run, measured" (the one place for its figures: wall time, the ablation
with its intervals, its spread over seeds).

Every number the code uses lives here; other configs import this one and override a few fields. Fields marked
"ours" are choices the paper leaves open (README, "Choices that are ours").
"""

import ml_collections


def _stage(steps: int, lr: float, trainable: tuple, loss: dict, head: str) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "steps": steps, "epochs": 0.0, "lr": lr, "trainable": trainable, "head": head,
            "loss": ml_collections.ConfigDict({"final": 0.0, "mnet": 0.0, "anet": 0.0, "patch": 0.0, **loss}),
        }
    )


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    # Random-number implementation: 'rbg' compiles parameter initialisation ~5x faster than 'threefry2x32'
    # on CPU (13 s vs 61 s for this config's init on 2 cores) at no cost in quality for training.
    c.prng_impl = "rbg"
    # Added to XLA_FLAGS by main.py; only XLA's CPU backend reads them (measured in README, "CPU speed").
    c.cpu_xla_flags = ""  # e.g. "--xla_cpu_opt_preset=FAST_COMPILE"; none measurably helped this config (README)

    # ---- data ----
    d = c.data = ml_collections.ConfigDict()
    d.name = "synthetic_fundus"  # synthetic_fundus | eyepacs | idrid | messidor
    d.data_dir = "~/.cache/zoomin_jax/tfds"  # where prepared datasets live (array_record)
    d.manual_dir = ""  # the user's own download folder (real datasets only)
    d.graham = False  # Graham's local-average subtraction at preparation (real datasets)
    # Lesion boxes and optic disc of the graded photos, a CSV image,class_name,x0,y0,x1,y1 in photo pixels (IDRiD
    # only; relative to manual_dir; docs/datasets.md). Its content hash names the prepared dataset. "": none.
    d.lesion_boxes_csv = ""
    d.train_split = "train"  # TFDS split strings: slices like "train[:80%]" work
    d.eval_split = "validation"
    # The synthetic dataset, generated on first use (its image size is model.image_size).
    # grade_distribution: weights of grades 0-4. EyePACS is (0.73, 0.07, 0.15, 0.025, 0.025); the default enriches
    # the rare grades (ours) so validation holds 45 grade-1 images, enough to measure what the zoom-in adds there.
    d.synthetic = ml_collections.ConfigDict(
        {
            "num_train": 2000, "num_validation": 300, "num_test": 300, "seed": 0, "distractor_rate": 0.3,
            "grade_distribution": (0.55, 0.15, 0.2, 0.05, 0.05),
        }
    )
    d.max_lesions = 64  # lesion boxes per example padded/truncated to this (localisation metrics only)
    d.eval_batch_size = 16  # global; the last batch is padded (and masked) so every host runs the same steps
    d.num_workers = 0  # grain worker processes per host (0: in the main process; on 2 cores workers do not help)
    d.read_threads = 2  # grain read threads per process
    d.prefetch = 2  # batches buffered per worker
    d.shuffle_seed = 0
    # Decoded training photographs kept in memory per process, up to this many GiB (ours): later epochs skip the
    # JPEG decode. This config's 2,000 train images take 0.9 GiB. 0: decode every time.
    d.cache_gb = 2.0
    # Training augmentation of the high-res image (the model derives the low-res view from it). The geometry is
    # applied on the host; brightness and contrast are drawn there and applied in the train step (photometric.py).
    d.augment = ml_collections.ConfigDict(
        {"rotate": True, "flip": True, "scale": 0.1, "brightness": 0.1, "contrast": 0.1}
    )
    # Class-balanced sampling: per-grade weights move from balanced (1.0) towards the true distribution by
    # `decay` per epoch (Kaggle solutions started balanced); enabled=False samples the data as it is.
    # floor 0.5: no grade drops under half its balanced share (C-Net keeps seeing grade 1 in its stage).
    d.balance = ml_collections.ConfigDict({"enabled": True, "decay": 0.7, "floor": 0.5})
    d.eval_tta = ("identity",)  # test-time variants averaged: identity, flip_lr, flip_ud, rot90, rot180, rot270

    # ---- model ----
    m = c.model = ml_collections.ConfigDict()
    m.image_size = 400  # high-res side, stored and cropped at this size (paper: 1230)
    m.low_res_size = 160  # M-Net's input, derived on device (paper: 492; same 2.5 ratio)
    m.num_classes = 5
    m.dtype = "float32"  # compute dtype: float32 | bfloat16 (parameters stay float32)
    m.dropout = 0.0
    m.mnet = ml_collections.ConfigDict({"repeats": (1, 2, 1), "width": 0.25})  # paper: (10, 20, 10), 1.0
    m.cnet = ml_collections.ConfigDict({"repeats": (1, 1, 1), "width": 0.25})
    # C-Net's input side (ours): each patch resized (bilinear) to this many pixels before C-Net, so a lesion of a
    # few high-res pixels spans more of the stem's stride-2 grid; 0: the patch as cut (patch_size pixels). Here 144
    # (1.5x the 96 px patch): the synthetic microaneurysms (1-1.6 px) are learnt only enlarged (README, "The default
    # run, measured"). The real-data configs and full.py keep 0.
    m.cnet.input_size = 144
    # A-Net reads this M-Net endpoint (ours). At 160 input block35 maps are 17x17 (one cell = 23.5 px at 400):
    # finer cells than block17's 8x8 found more lesions (recall@4 0.37-0.44 vs 0.25-0.30; README).
    m.anet = ml_collections.ConfigDict({"endpoint": "block35_1_ac", "hidden": 32})
    m.regions = ml_collections.ConfigDict()
    m.regions.num_regions = 4  # N boxes per image (ours; the paper shows 4 boxes cover 80% of lesions)
    m.regions.patch_size = 96  # high-res pixels (paper scale: 294 at 1230, same 0.24 ratio)
    m.regions.iou_threshold = 0.25  # suppress candidates overlapping a chosen box above this IoU (ours)
    # Candidate cells must have their centre inside this circle (fraction of half the image side): the eye disc of a
    # disc-cropped photograph, not its black corners (ours; None: anywhere).
    m.regions.disc_radius = 1.0
    # Also each photograph's own field of view (ours): candidate cells must show retina, not the black (or, after
    # Graham, grey) bands of a photograph cut at top and bottom. Train and eval batches then carry `fov_rows`.
    m.regions.fov = False
    # Keep boxes off the optic disc (ours): no candidate cell centred within this fraction of the image side from
    # the disc, found as the brightest optic_disc_window-sized square (fraction of the side) of the low-res
    # image's green channel (regions.locate_optic_disc). 0: off.
    m.regions.optic_disc_radius = 0.0
    m.regions.optic_disc_window = 0.07
    # Map the boxes are chosen on: "gated" (G = S * A, the paper's) or "attention" (A alone). Ours: S is signed and
    # its per-grade offset is free (attention sums to one), so G's peaks can sit where a grade's evidence is most
    # *negative*; on one trained checkpoint G's boxes found 16% of the lesions, A's 35% (README).
    m.regions.map = "attention"
    m.regions.levels = (1, 2, 3, 4)  # lesion grades whose maps select regions (level 0 is ignored)
    m.regions.reduce = "max"  # max over levels | per_level (N boxes from each level's map)
    m.pooling = "max"  # C-Net patch features over patches: max | mean (ours)
    # Both eyes (ours; Kaggle's EyePACS winners' lever): every batch built by patient, rows 2k and 2k + 1 one
    # patient's two eyes (a one-eyed patient's photograph twice; data/pairs.py), and a "pair" head grading each eye
    # on its fused feature beside its partner's, trained in stage "pair" (add it to stage_order) and reported as
    # "Both eyes". Needs a dataset with patients (EyePACS). Off: photographs one by one.
    m.pair_eyes = False
    # Where the fused head starts when C-Net's first stage begins (ours; zoomin_jax/fusion_init.py): "fresh" (random)
    # or "mnet_head" (M-Net's head for M-Net's feature, zero for C-Net's: Zoom-in-Net starts grading as M-Net).
    m.fusion_init = "fresh"

    # ---- training: stages in order (ours: the paper names the sub-networks, not the schedule) ----
    # Each stage trains the listed sub-networks ("mnet" = M-Net + its head, "anet", "cnet" = C-Net + fusion
    # head) with the given loss weights on the heads (final = fused logits, mnet, anet, patch = each zoomed-in patch
    # graded on its own with its image's grade, ours); the others are frozen.
    # `head` is what the stage-end evaluation reports: mnet | mnet_anet | zoom_in | all.
    # `epochs` > 0 replaces `steps` by ceil(epochs * training examples / batch_size), counted from the prepared train
    # split when training starts (zoomin_jax/schedule.py); 0 (here): the stage lasts `steps`.
    # The label of each zoomed-in patch in the "patch" loss (ours): "image" (every patch takes its image's grade) or
    # "most_lesion_like" (multiple-instance: a grade-0 image's patches grade 0, a graded image's grade carried by its
    # one patch least like grade 0; train_step._cross_entropy). README, "Grade 1".
    c.patch_labels = "image"
    c.stage_order = ("mnet", "anet", "cnet", "joint")
    c.stages = ml_collections.ConfigDict()
    c.stages.mnet = _stage(steps=800, lr=2e-3, trainable=("mnet",), loss={"mnet": 1.0}, head="mnet")
    c.stages.anet = _stage(steps=500, lr=2e-3, trainable=("anet",), loss={"anet": 1.0}, head="mnet_anet")
    c.stages.cnet = _stage(
        steps=1000, lr=2e-3, trainable=("cnet",), loss={"final": 1.0, "patch": 1.0}, head="zoom_in"
    )
    c.stages.joint = _stage(
        steps=300, lr=5e-4, trainable=("mnet", "anet", "cnet"),
        loss={"final": 1.0, "mnet": 0.3, "anet": 0.3, "patch": 0.3}, head="all",
    )
    # With model.pair_eyes: the pair head on the frozen network's fused features of both eyes.
    c.stages.pair = _stage(steps=300, lr=1e-3, trainable=("pair",), loss={"pair": 1.0}, head="pair")
    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adamw"  # adamw | sgd (momentum 0.9, nesterov)
    c.optimizer.weight_decay = 1e-4
    c.optimizer.clip_norm = 1.0  # global gradient norm clip (0: off)
    c.optimizer.warmup_fraction = 0.05  # of each stage's steps, linear warm-up
    c.optimizer.final_lr_fraction = 0.01  # cosine decay down to lr * this at each stage's end
    # The global batch the stages' lrs are meant for; at another batch_size they are rescaled when training starts
    # (adamw: by the square root of the ratio, sgd: linearly; zoomin_jax/schedule.py). 0 (here): lrs used as given.
    c.optimizer.reference_batch = 0
    # Weights only, when the workdir has no checkpoint: one of our workdirs, or a Keras Inception-ResNet-v2 .h5 file
    # (into M-Net and C-Net); "" (here): random initialisation. A named file that is missing stops the run before
    # anything is prepared or compiled.
    c.init_from = ""
    # With a workdir in init_from: take only its M-Net (backbone and grading head) into M-Net, and its backbone into
    # C-Net layer by layer (a shallower C-Net takes the layers it has); A-Net and the other heads random. For a
    # backbone pretrained by another config (configs/eyepacs256_pretrain.py). False: every variable of the workdir.
    c.init_from_backbone = False
    # Random initialisation drawn on the host with numpy (flax's default distributions; nothing compiled) instead of
    # a jitted flax init (ours). Off here: the jitted init takes ~13 s at this size and the README's figures were
    # made with it; configs/full.py turns it on (~65 s of compiling at paper scale on 2 CPU cores).
    c.init_on_host = False

    # ---- the decision predict reports (ours) ----
    # One per photograph: refer when P(grade >= 2) reaches the operating point that referred this share of the
    # referable photographs of the evaluation split (fitted at each stage-end evaluation, stored with the run).
    c.referral = ml_collections.ConfigDict({"sensitivity": 0.9})

    # ---- bookkeeping ----
    c.log_every = 10  # steps between progress lines (also when non-finite losses are checked)
    c.checkpoint_every = 100  # steps between asynchronous checkpoints (also saved at each stage end)
    c.keep_checkpoints = 3

    # ---- batch and devices ----
    c.batch_size = 8  # global batch, split over the mesh's data axis (and over hosts)
    c.mesh = ml_collections.ConfigDict({"data": -1})  # -1: all devices

    # ---- lesion mining (`--mode=mine`, zoomin_jax/mine.py; the paper names no numbers, all ours) ----
    # k-means of C-Net's features of every selected patch over a split: `clusters` clusters, the best of `restarts`
    # k-means++ seedings after `iterations` Lloyd steps; mosaics show each cluster's `mosaic_patches` patches nearest
    # its centre at `mosaic_px` pixels.
    c.mine = ml_collections.ConfigDict(
        {"clusters": 8, "iterations": 50, "restarts": 4, "seed": 0, "mosaic_patches": 16, "mosaic_px": 64}
    )
    return c
