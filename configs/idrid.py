"""IDRiD's graded training split (413 real photographs): train on 80%, evaluate on the other 20%, on a CPU.

Command:   python -m zoomin_jax.main --config=configs/idrid.py --workdir=runs/idrid \
               --config.data.manual_dir=/path/to/IDRiD     # the folder holding "B. Disease Grading"
Hardware:  2 CPU cores, 24 GiB. The first run prepares the dataset (disc crop + resize to 400 px, with the lesion
           boxes CSV: 1.5 min on a loaded machine).
Wall time: 9 min 09 s on 2 cores alone (commit 6207f67); 70 min on 2 cores shared with other jobs
           (load 6-13; commit 709cd8a).
Score (commit 3660b56, receptive-field box geometry; seed 0, one run) on the 83 held-out photographs: M-Net kappa
0.609, M-Net + A-Net 0.564, Zoom-in-Net 0.526 (referable AUC 0.870 / 0.878 / 0.888); lesion recall@4 0.382 against
a chance of 0.282 (416 CSV lesions; haemorrhage 0.321 / 0.282, hard exudate 0.420 / 0.282); the first box on the
optic disc in 0.146 of 82 photographs (chance 0.091). With --config.data.graham=True: kappa 0.607 / 0.652 / 0.575,
referable AUC 0.909 / 0.925 / 0.922, recall@4 0.560 (chance 0.304: Graham's circle is a smaller field of view;
haemorrhage 0.484 / 0.296, hard exudate 0.607 / 0.309), optic disc first 0.098 (chance 0.092). 83 photographs: one
seed is noisy.
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
    return c
