"""Command line: flags only; everything else is a library call.

    python -m zoomin_jax.main --config=configs/default.py [--workdir=runs/default] [--mode=forward]
"""

from absl import app, flags
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", "configs/default.py", "Config file (ml_collections).", lock_config=True)
flags.DEFINE_string("workdir", "runs/default", "One run per folder: checkpoints, metrics, predictions.")
flags.DEFINE_enum("mode", "forward", ["forward"], "forward: one sharded forward pass on synthetic photographs.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from zoomin_jax import forward  # after flag parsing, so --help stays fast

    if FLAGS.mode == "forward":
        forward.forward_demo(FLAGS.config)


if __name__ == "__main__":
    app.run(main)
