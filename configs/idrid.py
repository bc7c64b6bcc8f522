"""IDRiD's graded training split (413 real photographs): train on 80%, evaluate on the other 20%, on a CPU.

Command:   python -m zoomin_jax.main --config=configs/idrid.py --workdir=runs/idrid \
               --config.data.manual_dir=/path/to/IDRiD     # the folder holding "B. Disease Grading"
           from the fundus-pretrained backbone (run first: `--config=configs/eyepacs256_pretrain.py:idrid
           --workdir=runs/pretrain_idrid`, ~10 min):
               --config.init_from=runs/pretrain_idrid --config.init_from_backbone=True
Hardware:  2 CPU cores, 24 GiB. The first run prepares the dataset (disc crop + resize to 400 px, with the lesion
           boxes CSV: 1.5 min on a loaded machine).
Wall time / score: README, "IDRiD and EyePACS: the fundus-pretrained backbone and the ablation with intervals"
(three seeds with and without the pretrained backbone, the paired intervals; the levers' history in "IDRiD: what
each lever did").
Far too little data to grade DR clinically; it shows the pipeline on real photographs and their lesion boxes.
"""

from configs import default


def get_config():
    c = default.get_config()
    c.data.name = "idrid"
    c.data.manual_dir = "../shared/data/idrid"
    # Coarse haemorrhage / hard-exudate boxes and the optic disc of all graded photos (CODRAS, in the shared copy):
    # lesion recall@k with its chance level and the optic-disc share on the held-out part.
    c.data.lesion_boxes_csv = "lesion_boxes.csv"
    c.data.train_split = "train[:80%]"
    c.data.eval_split = "train[80%:]"
    c.data.balance.enabled = True  # grade 1 has 20 of 413 photographs
    # The levers measured on the held-out part (README, "IDRiD: what each lever did"):
    c.data.graham = True  # Graham's normalisation: recall@4 and every head's kappa and AUC up on real photographs
    c.model.regions.map = "gated"  # G = S * A (the paper's): more lesions in the boxes than A alone on IDRiD
    # Boxes from the severe and proliferative grades' maps: haemorrhages and exudates in number are their evidence;
    # the mild grade's map holds anything faintly abnormal (recall@4 up on both the held-out and the training part).
    c.model.regions.levels = (3, 4)
    # No box centred within 17% of the side from the optic disc (found in-model, regions.locate_optic_disc): the
    # brightest normal structure otherwise takes the first box in ~10% of the photographs.
    c.model.regions.optic_disc_radius = 0.17
    # The joint stage fine-tunes A-Net and C-Net only: with M-Net trainable too, 330 photographs overfit it (M-Net
    # kappa 0.672 -> 0.612, referable AUC 0.914 -> 0.908 over the 300 joint steps, seed 0).
    c.stages.joint.trainable = ("anet", "cnet")
    c.stages.joint.loss.mnet = 0.0
    # C-Net sees the patch as cut: every IDRiD and EyePACS figure in the README was measured so. The default's
    # enlargement (for the synthetic microaneurysms) is level with it on IDRiD (README, "The default run, measured").
    c.model.cnet.input_size = 0
    return c
