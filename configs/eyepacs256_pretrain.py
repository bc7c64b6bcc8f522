"""A fundus-pretrained backbone: M-Net graded on 4,017 real EyePACS photographs at 256 px (`../shared/data/eyepacs256`).

Command:   python -m zoomin_jax.main --config=configs/eyepacs256_pretrain.py --workdir=runs/eyepacs256_pretrain \
               --config.data.manual_dir=/path/to/eyepacs256    # Kaggle layout: train/*.jpeg, trainLabels.csv
           then start configs/idrid.py or configs/eyepacs.py from it:
               --config.init_from=runs/eyepacs256_pretrain --config.init_from_backbone=True
Hardware:  2 CPU cores, 24 GiB. Preparation (Graham, 256 px): ~1.5 min.
Wall time / score: README, "IDRiD and EyePACS: the fundus-pretrained backbone and the ablation with intervals".

ImageNet weights cannot be fetched on every machine; real fundus photographs can stand in for them. Grading is the
pretext task because it is the downstream task itself, needs no other labels, and teaches the features the paper's
M-Net learns from ImageNet then from EyePACS (vessels, the disc, lesions). The backbone is the default network's
(width 0.25, repeats (1, 2, 1)), so `init_from_backbone` puts it into M-Net and C-Net of `configs/idrid.py` and
`configs/eyepacs.py` (C-Net's shorter stack takes the blocks it has). M-Net alone (one stage); 90% of the patients
train, the other 10% (both eyes of each) are held out. The third party's crop and contrast stretch are kept, Graham
is applied on top (as in the configs it initialises); M-Net sees the photographs at their 256 px, the size
configs/eyepacs.py's M-Net sees.
"""

from configs import default


def get_config():
    c = default.get_config()
    c.data.name = "eyepacs"
    c.data.manual_dir = "../shared/data/eyepacs256"
    c.data.data_dir = "~/.cache/zoomin_jax/tfds_eyepacs256"  # apart from the 1024 px sample's builder folders
    c.data.graham = True  # as the configs it initialises
    c.data.train_split = "train[:90%]"  # by patient (patient_split.py)
    c.data.eval_split = "train[90%:]"
    c.data.balance.enabled = True
    c.model.image_size = 256
    c.model.low_res_size = 256
    c.stage_order = ("mnet",)
    c.stages.mnet.steps = 3000
    c.batch_size = 16
    c.checkpoint_every = 500
    c.model.cnet.input_size = 0  # as measured (C-Net is not trained here; the patch as cut costs least)
    return c
