"""A fundus-pretrained backbone: M-Net graded on 4,017 real EyePACS photographs (`../shared/data/eyepacs256`, 256 px).

Command:   python -m zoomin_jax.main --config=configs/eyepacs256_pretrain.py:idrid --workdir=runs/pretrain_idrid \
               --config.data.manual_dir=/path/to/eyepacs256    # Kaggle layout: train/*.jpeg, trainLabels.csv
           then start configs/idrid.py from it:
               --config.init_from=runs/pretrain_idrid --config.init_from_backbone=True
           (`:eyepacs` for configs/eyepacs.py; the part after the colon names the config the backbone is for)
Hardware:  2 CPU cores, 24 GiB. Preparation (Graham, 256 px): ~1 min. Training: ~8.5 min for `:idrid` (160 px),
           43 min for `:eyepacs` (256 px, measured with other work beside it).
Wall time / score: README, "IDRiD and EyePACS: the fundus-pretrained backbone and the ablation with intervals".

ImageNet weights cannot be fetched on every machine; real fundus photographs can stand in for them. Grading is the
pretext task because it is the downstream task itself, needs no other labels, and teaches the features the paper's
M-Net learns from ImageNet then from EyePACS (vessels, the disc, lesions). The backbone is the default network's
(width 0.25, repeats (1, 2, 1)), so `init_from_backbone` puts it into M-Net and C-Net of `configs/idrid.py` and
`configs/eyepacs.py` (C-Net's shorter stack takes the blocks it has). M-Net alone (one stage); 90% of the patients
train, the other 10% (both eyes of each) are held out. The third party's crop and contrast stretch are kept, Graham
is applied on top (as in the configs it initialises).

M-Net sees the photographs at the size the target config's M-Net sees (its `model.low_res_size`: 160 px for
idrid, 256 for eyepacs), so the backbone learns vessels and lesions at the scale it will meet them. On IDRiD this
is the lever that counts: the backbone pretrained at 160 px lifted M-Net's mean referable AUC from 0.922 (3 runs,
pretrained at 256 px) to 0.941 (6 seeds of one pretraining run; 0.921-0.950 over 8 runs; README).
"""

from configs import default, eyepacs, idrid

TARGETS = {"idrid": idrid, "eyepacs": eyepacs}  # the configs this backbone can start


def get_config(target: str = "idrid"):
    if target not in TARGETS:
        raise ValueError(f"configs/eyepacs256_pretrain.py:{target}: no such target config; name the config the "
                         f"backbone is for: one of {sorted(TARGETS)} (e.g. configs/eyepacs256_pretrain.py:idrid)")
    size = TARGETS[target].get_config().model.low_res_size
    c = default.get_config()
    c.data.name = "eyepacs"
    c.data.manual_dir = "../shared/data/eyepacs256"
    c.data.data_dir = "~/.cache/zoomin_jax/tfds_eyepacs256"  # apart from the 1024 px sample's builder folders
    c.data.graham = True  # as the configs it initialises
    c.data.train_split = "train[:90%]"  # by patient (patient_split.py)
    c.data.eval_split = "train[90%:]"
    c.data.balance.enabled = True
    c.model.image_size = 256
    c.model.low_res_size = size  # what the target's M-Net sees (the stored photographs stay 256 px)
    c.stage_order = ("mnet",)
    c.stages.mnet.steps = 3000
    c.batch_size = 16
    c.checkpoint_every = 500
    c.model.cnet.input_size = 0  # as measured (C-Net is not trained here; the patch as cut costs least)
    return c
