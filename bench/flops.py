"""FLOPs of a config's recipe from XLA's cost analysis, and the accelerator time they take at a stated utilisation.

    python bench/flops.py --config=configs/full.py --joint_gflop=514 [--tflops=989 --utilisation=0.4 --devices=8]

Lowers (does not compile: seconds, little memory) one backbone's forward and train step at M-Net's input and at
C-Net's patch size, and splits each stage's cost per photograph into them: M-Net stage = M-Net trained; A-Net =
M-Net forward + the rest; C-Net = M-Net forward + N patches trained + the rest; joint = `--joint_gflop`, the compiled
joint step's figure from bench/train_step.py, which also gives "the rest" (A-Net, heads, resizing). Multiply-adds
count 2. Stages in epochs are sized for `--num_train` examples.
"""

import os
import sys

from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
config_flags.DEFINE_config_file("config", "configs/full.py", "Config file.")
flags.DEFINE_float("joint_gflop", None, "GFLOP per image of the compiled joint step (bench/train_step.py).",
                   required=True)
flags.DEFINE_integer("num_train", 35126, "Training examples (EyePACS' train split).")
flags.DEFINE_integer("num_eval", 10906, "Evaluation examples per stage-end evaluation (EyePACS' public part).")
flags.DEFINE_float("tflops", 989.0, "Peak dense TFLOP/s of one accelerator in the config's dtype (H100 bf16).")
flags.DEFINE_float("utilisation", 0.4, "Share of the peak the train step is assumed to reach.")
flags.DEFINE_integer("devices", 8, "Accelerators.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    import jax
    import jax.numpy as jnp

    from zoomin_jax import schedule
    from zoomin_jax.models.inception_resnet import InceptionResNetV2

    config = schedule.resolve(FLAGS.config, FLAGS.num_train)
    m = config.model

    def gflop(fn, *args):
        cost = jax.jit(fn).lower(*args).cost_analysis()
        return (cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"] / 1e9

    def backbone(sub, side):
        net = InceptionResNetV2(tuple(sub.repeats), sub.width)
        x = jax.ShapeDtypeStruct((1, side, side, 3), jnp.float32)
        v = jax.eval_shape(lambda x: net.init(jax.random.PRNGKey(0), x), x)

        def loss(params, stats, x):
            out, _ = net.apply({"params": params, "batch_stats": stats}, x, train=True, mutable=["batch_stats"])
            return out["pool"].sum()

        return gflop(lambda v, x: net.apply(v, x)["pool"], v, x), gflop(jax.grad(loss), v["params"],
                                                                          v["batch_stats"], x)

    m_fwd, m_train = backbone(m.mnet, m.low_res_size)
    c_fwd, c_train = backbone(m.cnet, m.regions.patch_size)
    n = m.regions.num_regions
    rest = FLAGS.joint_gflop - m_train - n * c_train
    per_image = {"mnet": m_train, "anet": m_fwd + rest, "cnet": m_fwd + rest + n * c_train,
                 "joint": FLAGS.joint_gflop}
    print(f"M-Net at {m.low_res_size}: forward {m_fwd:.1f}, train {m_train:.1f} GFLOP | C-Net at "
          f"{m.regions.patch_size}: forward {c_fwd:.1f}, train {c_train:.1f} per patch | rest {rest:.1f}")
    total = 0.0
    for name in config.stage_order:
        steps = config.stages[name].steps
        images = steps * config.batch_size
        flop = images * per_image.get(name, FLAGS.joint_gflop) * 1e9
        total += flop
        print(f"stage {name}: {steps} steps, {images} images x {per_image.get(name, FLAGS.joint_gflop):.0f} GFLOP "
              f"= {flop:.3g} FLOP")
    evals = len(config.stage_order) * FLAGS.num_eval * len(config.data.eval_tta) * (m_fwd + n * c_fwd + rest / 3)
    rate = FLAGS.devices * FLAGS.tflops * 1e12 * FLAGS.utilisation
    print(f"train {total:.3g} FLOP + evaluations {evals * 1e9:.3g} FLOP at {rate:.3g} FLOP/s "
          f"({FLAGS.devices} x {FLAGS.tflops:g} TFLOP/s x {FLAGS.utilisation:g}): {(total + evals * 1e9) / rate:.0f} s")


if __name__ == "__main__":
    app.run(main)
