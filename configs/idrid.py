"""IDRiD's graded training split (413 real photographs): train on 80%, evaluate on the other 20%, on a CPU.

Command:   python -m zoomin_jax.main --config=configs/idrid.py --workdir=runs/idrid \
               --config.data.manual_dir=/path/to/IDRiD     # the folder holding "B. Disease Grading"
Hardware:  2 CPU cores, 24 GiB. The first run prepares the dataset (disc crop + resize to 400 px, ~20 s).
Wall time / score: 9 min 09 s on 2 cores with the shared half-size copy; on the 83 held-out photographs M-Net kappa
0.569, M-Net + A-Net 0.570, Zoom-in-Net 0.594 (referable AUC 0.875 / 0.870 / 0.893). Only 2 of them carry lesion
masks, so the recall printed is anecdotal.
Far too little data to grade DR clinically; it shows the pipeline on real photographs and their masks.
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
    return c
