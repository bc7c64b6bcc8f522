"""A tiny config of the same structure as the default, for fast tests (CPU, 8 host devices)."""

from configs import default


def tiny_config(data_dir: str | None = None):
    c = default.get_config()
    m = c.model
    m.image_size, m.low_res_size = 100, 80
    m.mnet.repeats, m.mnet.width = (1, 1, 1), 0.125
    m.cnet.repeats, m.cnet.width = (1, 1, 1), 0.125
    m.cnet.input_size = 0  # the patch as cut: the tests' compile cost stays as it was
    m.anet.endpoint, m.anet.hidden = "block35_1_ac", 8  # 7x7 at 80 input
    m.regions.patch_size, m.regions.num_regions = 75, 2
    c.batch_size = 8
    c.data.eval_batch_size = 8
    for name, steps in (("mnet", 4), ("anet", 2), ("cnet", 2), ("joint", 2)):
        c.stages[name].steps = steps
    c.log_every = 2
    c.checkpoint_every = 3
    d = c.data
    d.synthetic.num_train, d.synthetic.num_validation, d.synthetic.num_test = 24, 8, 8
    d.num_workers = 0
    if data_dir:
        d.data_dir = data_dir
    return c


def one_stage_config(data_dir, steps: int, num_validation: int):
    """The tiny config cut to stage mnet alone: the runs of the subprocess tests (which pass the same as flags)."""
    c = tiny_config(str(data_dir))
    c.stage_order = ("mnet",)
    c.stages.mnet.steps = steps
    c.data.synthetic.num_validation = num_validation
    return c


def get_config():
    """For `--config=tests/tiny.py` in subprocess tests."""
    return tiny_config()
