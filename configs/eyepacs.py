"""The paper's data on a CPU: real EyePACS photographs (the Kaggle download's layout), held out by patient.

Command:   python -m zoomin_jax.main --config=configs/eyepacs.py --workdir=runs/eyepacs \
               --config.data.manual_dir=/path/to/eyepacs    # train/*.jpeg and trainLabels.csv (a partial download)
           with the fundus-pretrained backbone (run first: `--config=configs/eyepacs256_pretrain.py:eyepacs
           --workdir=runs/pretrain_eyepacs`): --config.init_from=runs/pretrain_eyepacs --config.init_from_backbone=True
Hardware:  2 CPU cores, 24 GiB. The first run prepares the dataset (disc crop, Graham, 640 px: ~45 s for the
           660 photographs of `../shared/data/eyepacs`).
Wall time / score: README, "IDRiD and EyePACS: the fundus-pretrained backbone and the ablation with intervals"
           (three seeds with and without the pretrained backbone, the paired intervals of
           `python -m zoomin_jax.ablation`).

The zoom-in exists for resolution, so this config trains at the highest resolution a 2-core CPU trains in about 32
minutes (31.5 measured), keeping the paper's ratios: high-res 640 / low-res 256 (the paper's 1230 / 492 is
2.5), patches of 154 px (294 / 1230 = 0.24). M-Net's 256 px is the size of the 256 px pretraining photographs.
75% of the patients train, the other 25% (both eyes of each) are held out (`patient_split.py`); grades are
class-balanced at first, as on IDRiD.
Boxes: the IDRiD config's levers (gated map of grades 3-4, none on the optic disc) and its joint stage without
M-Net: measured there. Here the maps of grades 2-4 and 1-4 were tried (3 seeds each, README): Zoom-in-Net's AUC
normal fell, its referable AUC did not rise.
"""

from configs import idrid


def get_config():
    c = idrid.get_config()
    c.data.name = "eyepacs"
    c.data.manual_dir = "../shared/data/eyepacs"
    c.data.lesion_boxes_csv = ""  # no lesion boxes for EyePACS: no recall figure
    c.data.train_split = "train[:75%]"  # patients, both eyes together
    c.data.eval_split = "train[75%:]"
    c.model.image_size = 640
    c.model.low_res_size = 256
    c.model.regions.patch_size = 154
    return c
