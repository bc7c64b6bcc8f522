"""IDRiD's graded training split (413 real photographs): train on 80%, evaluate on the other 20%, on a CPU.

Command:   python -m zoomin_jax.main --config=configs/idrid.py --workdir=runs/idrid \
               --config.data.manual_dir=/path/to/IDRiD     # the folder holding "B. Disease Grading"
Hardware:  2 CPU cores, 24 GiB. The first run prepares the dataset (disc crop + resize to 400 px).
Far too little data to grade DR clinically; it shows the pipeline on real photographs and their masks.
"""

from configs import default


def get_config():
    c = default.get_config()
    c.data.name = "idrid"
    c.data.manual_dir = "../shared/data/idrid"
    c.data.train_split = "train[:80%]"
    c.data.eval_split = "train[80%:]"
    c.data.balance.enabled = True  # grade 1 has 20 of 413 photographs
    return c
