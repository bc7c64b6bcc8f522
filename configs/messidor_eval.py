"""Messidor (1,200 photographs) evaluation of an EyePACS-trained full-scale checkpoint (the paper's transfer test).

Command:   python -m zoomin_jax.main --config=configs/messidor_eval.py --mode=eval --workdir=runs/full \
               --config.data.manual_dir=/path/to/Messidor     # the folder holding Base11 .. Base34
Hardware:  one accelerator; evaluation only.
Compare with the paper: normal vs abnormal AUC 0.921, accuracy 0.905. Messidor's retinopathy grade (0-3) is not
the ICDR scale, so read the binary tasks (normal vs abnormal, referable vs non-referable), not the kappa. The
EyePACS run's grade thresholds do not carry over to Messidor's scale, so this evaluation fits its own on the same
1,200 photographs: its kappa(thr) is in-sample (marked * in the table, "(in-sample)" in the predictions CSV),
optimistic, and not a result; split Messidor (e.g. `test[:50%]` to fit, `--split='test[50%:]'` to report) for one.
The photographs are prepared as full.py prepares EyePACS (1230 px, Graham normalisation); evaluation restores the
workdir's checkpoint, so full.py's ImageNet weight file (init_from) is not needed here.
"""

from configs import full


def get_config():
    c = full.get_config()
    c.data.name = "messidor"
    c.data.eval_split = "test"
    c.data.eval_tta = ("identity", "flip_lr")
    return c
