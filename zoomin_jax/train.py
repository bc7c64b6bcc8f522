"""Staged training of Zoom-in-Net: one jitted, sharded train step per stage, Orbax checkpoints, stage-end evals.

Reads top to bottom like the recipe it is:
  1. mesh and config checks; the resolved config written once to the workdir;
  2. variables: the newest good checkpoint in the workdir (resume: model, optimiser inside a stage, and the data
     position where the saved one fits this pipeline, else the one the step implies), else `config.init_from`
     (weights only), else a jitted, already-sharded init;
  3. for each stage in `config.stage_order`: an optimiser whose mask freezes the other sub-networks, a train step
     that donates the state, progress lines, asynchronous checkpoints, and an evaluation of the stage's head;
  4. the paper's ablation table (M-Net, M-Net + A-Net, Zoom-in-Net) on the evaluation split.
A non-finite loss stops the run naming the step range; no checkpoint is written after it. SIGTERM stops every
process at the same agreed check point (`preemption.py`): during training after saving that step, during an
evaluation between batches with nothing new to save; a resumed run re-runs a stage-end evaluation it lacks.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from zoomin_jax import (
    ablation,
    agree,
    checkpoint,
    evaluate,
    fusion_init,
    init_from,
    paths,
    preemption,
    schedule,
    sharding,
    workdir_lock,
)
from zoomin_jax.data import datasets, input_pipeline, position
from zoomin_jax.eval_step import make_eval_step
from zoomin_jax.forward import abstract_variables, build, init_variables
from zoomin_jax.heads import HEADS, heads_for
from zoomin_jax.metrics import format_ablation_table
from zoomin_jax.progress import MetricWriter, Progress
from zoomin_jax.train_step import STEP_KEYS, TrainState, make_optimizer, make_train_step, stages
from zoomin_jax.validate import validate_config, validate_stages


def _check_finite(pending: list[tuple[int, dict]], last_good: int | None) -> list[dict]:
    """Fetches the pending step metrics; raises FloatingPointError on a non-finite loss, naming the steps."""
    fetched = jax.device_get([m for _, m in pending])
    for (step, _), m in zip(pending, fetched, strict=True):
        if not np.isfinite(m["loss"]):
            raise FloatingPointError(
                f"Loss became non-finite at step {step + 1} (checked steps {pending[0][0] + 1}-{pending[-1][0] + 1}). "
                f"Nothing was saved after it; the last good checkpoint is step {last_good}. Lower the stage's lr or "
                "config.optimizer.clip_norm and re-run the same command to resume from there."
            )
    return fetched


def _eval_done(results: dict, stage, config) -> bool:
    """Whether the stage-end evaluation of `stage` is in eval_results.json (a run stopped before it may not be)."""
    heads = heads_for(config) if stage.config.head == "all" else [stage.config.head]
    return all(results.get(HEADS[h], {}).get("step") == stage.end for h in heads)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains all stages (resuming where the workdir left off) and evaluates each stage's head.

    Returns:
      {head name: grading report} from the latest evaluation of each head, as in the printed ablation table.

    Raises:
      preemption.Preempted: after SIGTERM, at a check point all processes agree on; the last completed step is
        saved (during an evaluation nothing new is: its stage-end step already is, and the evaluation runs again
        on resume). `python -m zoomin_jax.main` turns it into exit status 75.
    """
    # Every batch-size and device-count rule before the workdir is touched or anything compiled.
    validate_config(config, jax.device_count(), jax.process_count(), jax.local_device_count())
    validate_stages(config)
    # From here on SIGTERM is noted and acted on at the next check point (preparing data, restoring, compiling
    # included), not a kill.
    # The workdir's lock is taken once the workdir exists and given back however the run ends.
    with preemption.Preemption() as preempt, workdir_lock.WorkdirLock() as lock:
        return _train_and_evaluate(config, workdir, preempt, lock)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, preempt: preemption.Preemption,
                        lock: workdir_lock.WorkdirLock) -> dict:
    """The recipe of the module docstring; `preempt` is checked between stages, after every step and eval batch."""
    workdir = paths.resolve(workdir)

    def before_any_collective():  # a host that lacks the weight file or cannot create the workdir stops them all
        init_from.check(config, workdir)  # a missing weight file stops the run before the workdir, data or compiling
        paths.ensure_dir(workdir)

    agree.together(before_any_collective)
    lock.acquire(workdir)  # one run per workdir: a second one stops here, before checkpoints and metrics
    mesh = sharding.make_mesh(config.mesh.data)
    datasets.check_splits(config)  # prepares the dataset if needed; a split it lacks stops the run here, named
    config = schedule.resolve(config, input_pipeline.num_train_examples(config))  # epochs -> steps; lr -> batch
    is_lead = jax.process_index() == 0
    if is_lead:
        paths.join(workdir, "config.json").write_text(config.to_json_best_effort(indent=2))

    model = build(config)
    plan = stages(config)
    total = plan[-1].end
    repl = sharding.replicated(mesh)
    abstract = abstract_variables(model, config)
    var_target = checkpoint.abstract_with_sharding(abstract, jax.tree_util.tree_map(lambda _: repl, abstract))
    ckpt = checkpoint.Checkpointer(workdir, keep=config.keep_checkpoints)
    ckpt.remove_temporary()  # left by a killed or failed save
    ckpt.check_free_space(ckpt.save_size(var_target), "a checkpoint (the model alone, at least)")
    # The newest checkpoint that verifies and restores finite (model, and the optimiser where it resumes inside a
    # stage); only a step with proven damage is reported and moved aside, any other failure stops the run.
    resumed = ckpt.restore_newest_good(var_target, lambda step: _opt_target(config, plan, step, abstract, repl))
    start, variables = resumed.step or 0, resumed.model
    if start:
        logging.info("Resuming from %s step %d", ckpt.directory, start)
    elif config.init_from:
        variables = init_from.load(
            config.init_from, var_target, config,
            lambda: init_variables(model, config, mesh, jax.random.PRNGKey(config.seed)),
        )
    else:
        variables = init_variables(model, config, mesh, jax.random.PRNGKey(config.seed))
    train_iter = _train_iterator(config, ckpt, start)

    writer = MetricWriter(workdir, enabled=is_lead, resume_step=start)  # rows of steps to be replayed go
    results = evaluate.load_results(workdir)
    eval_step = make_eval_step(model, mesh, tuple(config.data.eval_tta),
                                        config.model.regions.fov)  # compiled once, used per stage
    local_rows = config.batch_size // jax.process_count()
    logging.info("Preemption: %s", preempt.mechanism)
    try:
        for stage in plan:
            if start > stage.end or stage.end == stage.begin:
                continue
            if start < stage.end:
                if preempt.check():  # between stages, before the next one compiles
                    saved = f"step {start} is saved" if start else "no step was saved yet"
                    raise preemption.Preempted(f"SIGTERM before stage {stage.name}; {saved}", start or None)
                opt_state = resumed.opt["opt_state"] if start > stage.begin else None
                if fusion_init.applies(config, plan, stage, start):  # Zoom-in-Net starts grading as M-Net
                    logging.info("Stage %s: the fused head starts as M-Net's head (model.fusion_init)", stage.name)
                    params = jax.jit(fusion_init.from_mnet_head, out_shardings=jax.tree_util.tree_map(
                        lambda _: repl, variables["params"]))(variables["params"])
                    variables = {**variables, "params": params}
                variables = _train_stage(config, model, mesh, stage, variables, opt_state, start, total, ckpt,
                                         train_iter, writer, preempt, local_rows)
                start = stage.end
            if not _eval_done(results, stage, config):  # also after a resume that stopped between the save and the eval
                writer.drop(stage.end, "eval")
                try:
                    reports = evaluate.evaluate_heads(model, variables, config, mesh, workdir, step=stage.end,
                                                      head=stage.config.head, tag=stage.name, eval_step=eval_step,
                                                      preemption=preempt)
                except preemption.Preempted as e:
                    raise preemption.Preempted(f"{e}; step {stage.end} is saved and the evaluation of stage "
                                               f"{stage.name} runs on resume", stage.end) from None
                results.update(reports)
                writer.write(stage.end, "eval", {"stage": stage.name, **{h: r["kappa"] for h, r in reports.items()}})
                evaluate.save_results(workdir, results)
    finally:  # an exception (not kill -9) still lets in-flight asynchronous saves finish: nothing lost
        ckpt.close()
        writer.close()
    if results:
        table = format_ablation_table(results)
        if is_lead and len(results) > 1 and HEADS["mnet"] in results:  # paired differences to M-Net
            table += "\n\n" + ablation.intervals_or_note(workdir)
        print(f"\nAblation on '{config.data.eval_split}' ({config.data.name}):\n{table}", flush=True)
        if is_lead:
            paths.join(workdir, "ablation.txt").write_text(table + "\n")
        print(json.dumps({h: {k: r.get(k) for k in ("kappa", "accuracy")} for h, r in results.items()}))
    return results


def _opt_target(config, plan, step: int, abstract, repl):
    """The abstract optimiser item ({step, opt_state}, replicated) a checkpoint at `step` holds for a resume inside
    a stage; None where `step` ends a stage (or is 0): the next stage starts a fresh optimiser."""
    inside = [s for s in plan if s.begin < step < s.end]
    if not inside:
        return None
    tx = make_optimizer(config, inside[0].config, abstract["params"])
    opt_abstract = jax.eval_shape(tx.init, abstract["params"])
    return {"step": jax.ShapeDtypeStruct((), jnp.int32, sharding=repl),
            "opt_state": checkpoint.abstract_with_sharding(opt_abstract,
                                                           jax.tree_util.tree_map(lambda _: repl, opt_abstract))}


def _train_iterator(config, ckpt: checkpoint.Checkpointer, step: int):
    """The train iterator at global step `step`: the position saved with that checkpoint where it fits this
    pipeline (`data/position.py`), else the position the step implies, said in one line. Every process takes the
    same path (a position that does not fit on one host is derived on all)."""
    it = input_pipeline.train_iterator(config)
    if not step:
        return it
    saved, reason = ckpt.saved_position(step)
    if reason is None:
        reason = position.misfit(saved, it.get_state(), step)
    failure = agree.first_failure(None if reason is None else f"{reason}{agree.where(jax.process_index())}")
    if failure is None:
        it.set_state(saved)
        return it
    if jax.process_index() == 0:
        print(f"data position saved with step {step} not used: {failure[1]}; continuing from the position step "
              f"{step} implies (the same batches)", flush=True)
    it.close()
    return input_pipeline.train_iterator(config, start_step=step)


def _train_stage(config, model, mesh, stage, variables, opt_state, start, total, ckpt, train_iter, writer, preempt,
                 local_rows):
    """Trains one stage from global step `start` to its end, saving every `checkpoint_every` steps and at its end.
    `opt_state` is the restored optimiser state when `start` lies inside the stage, else None (a fresh one).

    Returns:
      The variables ({params, batch_stats}) at the stage's end.

    Raises:
      preemption.Preempted: after saving the step all processes agreed to stop at.
    """
    repl = sharding.replicated(mesh)
    params, batch_stats = variables["params"], variables["batch_stats"]
    tx = make_optimizer(config, stage.config, params)
    opt_abstract = jax.eval_shape(tx.init, params)
    opt_sharding = jax.tree_util.tree_map(lambda _: repl, opt_abstract)
    if opt_state is None:  # a stage starting here; a resume inside it restored its optimiser with the model
        opt_state = jax.jit(tx.init, out_shardings=opt_sharding)(params)
    state = TrainState(jax.device_put(jnp.asarray(start, jnp.int32), repl), params, batch_stats, opt_state)
    state_sharding = TrainState(repl, jax.tree_util.tree_map(lambda _: repl, params),
                                jax.tree_util.tree_map(lambda _: repl, batch_stats), opt_sharding)
    train_step = make_train_step(model, config, stage.config, tx, mesh, state_sharding)
    logging.info("Stage %s: steps %d-%d, training %s", stage.name, stage.begin + 1, stage.end,
                 ", ".join(stage.config.trainable))
    first = _global_batch(next(train_iter), mesh, local_rows)
    try:  # compiled ahead, so that SIGTERM is honoured mid-compile (one process; see preemption.compile_promptly)
        preemption.compile_promptly(train_step, (state, first), preempt, f"the train step of stage {stage.name}")
    except preemption.Preempted as e:
        saved = f"step {start} is saved" if start else "no step was saved yet"
        raise preemption.Preempted(f"{e}; {saved}", start or None) from None
    progress = Progress(total, config.batch_size, start)
    pending: list[tuple[int, dict]] = []
    for step in range(start, stage.end):
        batch = first if step == start else _global_batch(next(train_iter), mesh, local_rows)
        state, metrics = train_step(state, batch)
        pending.append((step, metrics))
        done = step + 1
        preempted = preempt.check()  # the same answer on every process at this step
        # The stage's last step is saved before its evaluation: a run stopped during the evaluation resumes
        # there and runs the evaluation again (eval_results.json says which are done).
        save = done % config.checkpoint_every == 0 or done == stage.end or preempted
        if done % config.log_every == 0 or save:
            fetched = _check_finite(pending, ckpt.latest_step())
            means = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[-1]}
            print(progress.line(done, stage.name, means), flush=True)
            writer.write(done, "train", {"stage": stage.name, **means})
            pending = []
        if save:
            ckpt.save(done, {"params": state.params, "batch_stats": state.batch_stats},
                      {"step": state.step, "opt_state": state.opt_state}, train_iter)
        if preempted:
            raise preemption.Preempted(f"SIGTERM in stage {stage.name}: step {done} is saved", done)
    return {"params": state.params, "batch_stats": state.batch_stats}


def _global_batch(batch: dict, mesh, local_rows: int) -> dict:
    """This host's rows of a training batch as global arrays sharded on 'data'."""
    assert batch["image"].shape[0] == local_rows, (batch["image"].shape, local_rows)
    return sharding.to_global({k: batch[k] for k in STEP_KEYS if k in batch}, mesh)
