"""Command line: flags only; everything else is a library call.

    python -m zoomin_jax.main --config=configs/default.py --workdir=runs/default            # train (resumes)
    python -m zoomin_jax.main --config=configs/default.py --workdir=runs/default --mode=eval  # restore + evaluate
    python -m zoomin_jax.main --config=configs/default.py --workdir=runs/default --mode=predict \
        --input=photos/ --output=out/                                                          # your photographs
    python -m zoomin_jax.main --config=configs/default.py --workdir=runs/default --mode=mine --split=test \
        --output=mined/                                                                        # lesion mining
    python -m zoomin_jax.main --config=configs/default.py --workdir=runs/default --mode=export \
        --output=model.jaxexport                                                               # jax.export file
    python -m zoomin_jax.main --config=configs/default.py --mode=forward                      # one forward pass

Exit status: 0 finished; 75 (EX_TEMPFAIL) preempted by SIGTERM, the last completed step saved: run the same
command again to resume; 2: the config cannot work (every problem named, nothing started); anything else: failed.
"""

import os
import sys

from absl import app, flags
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", "configs/default.py", "Config file (ml_collections).", lock_config=True)
flags.DEFINE_string("workdir", "runs/default", "One run per folder: checkpoints, metrics, predictions.")
flags.DEFINE_enum("mode", "train", ["train", "eval", "predict", "mine", "export", "forward"],
                  "train: train all stages (re-running resumes); eval: restore a checkpoint and evaluate; "
                  "predict: grade your own photographs (--input, --output) with a checkpoint; "
                  "mine: cluster the features of the zoomed patches over a split (--output, --split): purities "
                  "and mosaics; "
                  "export: the checkpoint's inference function as a jax.export file (--output); "
                  "forward: one sharded forward pass of an untrained network on synthetic photographs.")
flags.DEFINE_integer("step", None, "eval, predict: checkpoint step (default: the latest).")
flags.DEFINE_string("input", None, "predict: a photograph or a folder of them (JPEG, PNG, TIFF; recursive); "
                    "without it, predict grades a prepared split (--split).")
flags.DEFINE_string("output", None, "predict: folder for predictions.csv, predictions.json, report.html, "
                    "unreadable.csv; mine: folder for mining.json, clusters.csv, mosaics; export: the file to write.")
flags.DEFINE_bool("pictures", True, "predict: a picture per photograph (maps as heat, boxes, zoomed patches).")
flags.DEFINE_string("split", None, "eval, mine, predict without --input: the split (default: "
                    "config.data.eval_split).")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host TPU / GPU runs).")
flags.DEFINE_string("coordinator_address", None, "--distributed without SLURM/TPU: host:port of process 0.")
flags.DEFINE_integer("num_processes", None, "--distributed without SLURM/TPU: number of processes.")
flags.DEFINE_integer("process_id", None, "--distributed without SLURM/TPU: this process's index (0-based).")
flags.DEFINE_bool("library_logs", False, "Also show the libraries' INFO logging (by default only this project's "
                  "lines and every library's warnings and errors: Orbax alone logs ~1,600 INFO lines a default run).")
FLAGS = flags.FLAGS
EXIT_CONFIG = 2  # a config that cannot work: fix the flags, nothing was started


def main(argv):
    del argv
    if not FLAGS.library_logs:
        from zoomin_jax import log_filter

        log_filter.quiet_libraries()
    config = FLAGS.config
    # Before any backend starts: CPU compiler flags (only read by XLA's CPU backend).
    if config.cpu_xla_flags:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + config.cpu_xla_flags).strip()
    import jax

    jax.config.update("jax_default_prng_impl", config.prng_impl)
    if FLAGS.distributed:
        # None everywhere lets jax detect Cloud TPU / SLURM / Open MPI by itself.
        jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                                   num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
    from zoomin_jax import (
        agree,
        checkpoint,
        evaluate,
        forward,
        paths,
        predict_log,
        preemption,
        train,
        validate,
        workdir_lock,
    )
    from zoomin_jax.data import patient_split

    try:
        if FLAGS.mode == "train":
            train.train_and_evaluate(config, FLAGS.workdir)
        elif FLAGS.mode == "eval":
            evaluate.evaluate_checkpoint(config, FLAGS.workdir, step=FLAGS.step, split=FLAGS.split)
        elif FLAGS.mode == "export":
            from zoomin_jax import export

            if not FLAGS.output:
                sys.exit("zoomin_jax: --mode=export needs --output=FILE")
            export.export_checkpoint(config, FLAGS.workdir, FLAGS.output, step=FLAGS.step)
        elif FLAGS.mode == "mine":
            from zoomin_jax import mine

            if not FLAGS.output:
                sys.exit("zoomin_jax: --mode=mine needs --output=FOLDER")
            mine.mine_split(config, FLAGS.workdir, FLAGS.output, split=FLAGS.split, step=FLAGS.step)
        elif FLAGS.mode == "predict":
            from zoomin_jax import predict

            if not FLAGS.output:
                sys.exit("zoomin_jax: --mode=predict needs --output=FOLDER, and --input=PHOTO_OR_FOLDER (your "
                         "photographs) or --split=SPLIT (a prepared split of the config's dataset)")
            if FLAGS.input and FLAGS.split:
                sys.exit("zoomin_jax: --mode=predict takes --input (photographs) or --split (a prepared split), "
                         "not both")
            if FLAGS.input:
                predict.predict_folder(config, FLAGS.workdir, FLAGS.input, FLAGS.output, step=FLAGS.step,
                                       pictures=FLAGS.pictures)
            else:
                predict.predict_split(config, FLAGS.workdir, FLAGS.output, split=FLAGS.split, step=FLAGS.step,
                                      pictures=FLAGS.pictures)
        else:
            forward.forward_demo(config)
    except preemption.Preempted as e:
        if jax.process_count() > 1:  # leave together: none is cut off (e.g. by srun --kill-on-bad-exit) mid-save
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("zoomin_jax preempted")
        print(f"Preempted: {e}. Exit status {preemption.EXIT_PREEMPTED}: re-run the same command to resume.",
              flush=True)
        preemption.exit_preempted()
    except (validate.ConfigError, patient_split.SplitError) as e:  # a config that cannot work: every problem, no
        print(f"zoomin_jax: {e}", file=sys.stderr, flush=True)  # traceback, and its own exit status
        sys.exit(EXIT_CONFIG)
    except (workdir_lock.WorkdirInUse, agree.Failed) as e:  # one line, no traceback; exit status 1
        sys.exit(f"zoomin_jax: {e}")
    # A broken, mismatched or unreadable checkpoint, an unwritable or full workdir: the step or path, the reason,
    # the fix; the same line on every process of a multi-process run (`agree.py`).
    except (checkpoint.BrokenCheckpoint, checkpoint.CheckpointMismatch, checkpoint.RestoreFailed,
            paths.StorageError, predict_log.OtherStep) as e:
        sys.exit(f"zoomin_jax: {e}")


if __name__ == "__main__":
    app.run(main)
