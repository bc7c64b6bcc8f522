"""A thin Orbax wrapper: the model variables, the optimiser state and the data-iterator position, saved together.

Three items per step, so evaluation can restore the model alone (without the optimiser of whichever stage wrote
it, and without the training data): `model` = {params, batch_stats}, `opt` = {step, opt_state}, `data` = the grain
iterator state. Saves are asynchronous; the manager keeps the last `keep` steps.

Integrity: no broken checkpoint is ever used silently.
- Every save carries a manifest (`zoomin_manifest.json` in the step folder): each file's relative path, size and
  sha256 (~1.4 GB/s on one core: ~1 s for the paper-scale 1.3 GB, in Orbax's background thread, GIL released).
  The lead writes it after every process has finished writing and before Orbax renames the temporary folder to
  the step, so a committed step always has its manifest (a kill -9 in between leaves only a temporary folder).
  Orbax's own commit files (`_CHECKPOINT_METADATA`, rewritten at commit, and `commit_success.txt`) are left out.
- `restore` checks the files against the manifest first and refuses a restore with a non-finite floating-point
  value (the manifest records that rule; a NaN never reaches a checkpoint on purpose: training stops before saving
  one). Those are the only proofs of damage: `BrokenCheckpoint`.
- Any other failure (an I/O error while reading, an out-of-memory, a library's error, an optimiser state of another
  shape) proves nothing about the files: `RestoreFailed`, one line with the cause; nothing is moved, the run stops,
  and re-running once the cause has passed resumes from the same step.
- A step whose saved array shapes differ from the target's (Orbax's metadata) is not broken but from another
  config: `CheckpointMismatch` stops the run, nothing moved.
- A step without a manifest (written before this check existed, or by a storage whose commit does not rename)
  cannot be proven damaged: it is used if it restores without an exception and is finite, else the run stops.
- Training resumes from the newest good step (`restore_newest_good`); each newer step with proven damage is
  reported in one line and moved to `<workdir>/checkpoints_broken/<step>-<reason>` (kept for forensics, out of
  Orbax's sight, so a later save of the same step works). `--mode=eval` refuses a broken step, naming the newest
  intact one.
- The data-iterator position is not the model: `saved_position` reads it and never raises; the trainer uses it
  only where it fits the current pipeline (`data/position.py`), else continues from the position the step implies.
- Multi-process runs: every check and read is followed by an agreement (`agree.py`) before anything collective, so
  a fault on one host (an unreadable file, a failed read, a failed move) stops every process with the same line.

Storage: before each save the free space is checked against the saved arrays' uncompressed size plus a margin;
a save that fails has its temporary folder removed and stops the run with one line (`paths.StorageError`), the
previous good checkpoint untouched. Temporary folders left by a killed save are removed at start
(`remove_temporary`, the training lead only).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from zoomin_jax import agree, paths


def _write_replicated_arrays_once() -> None:
    """Orbax's default 'replica-parallel' save slices each replicated array over its replicas, jitting one small
    program per array shape: ~330 compilations on the first save of even the tiny test model (15-55 s on 2 CPU
    cores, in every new process). Parameters and optimiser state are replicated here (data parallelism only), so
    the first replica writes each array whole instead: one host writes, which for the paper-scale model is ~1.3 GB
    per checkpoint, asynchronously."""
    from orbax.checkpoint._src.metadata import array_metadata_store

    handler = ocp.type_handlers.ArrayHandler(array_metadata_store=array_metadata_store.Store(),
                                             use_replica_parallel=False)
    ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)


def abstract_with_sharding(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs carrying the target shardings, for restoring straight into sharded arrays."""
    return jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )


MANIFEST = "zoomin_manifest.json"
# Written or rewritten by Orbax when it commits, after the manifest: not fingerprinted.
_ORBAX_COMMIT_FILES = ("_CHECKPOINT_METADATA", "commit_success.txt")
_TMP_MARK = ".orbax-checkpoint-tmp"  # Orbax's temporary step folders: `<step>.orbax-checkpoint-tmp[...]`
# Free space asked for before a save, beyond the arrays' uncompressed size: Orbax's metadata files, the data
# iterator's JSON and file-system slack. Compression usually makes the real checkpoint smaller, never much larger.
_SAVE_MARGIN_FRACTION = 0.05
_SAVE_MARGIN_BYTES = 16 << 20


class BrokenCheckpoint(Exception):
    """A checkpoint whose files do not match their manifest, that Orbax cannot restore, or that holds a non-finite
    value. `str()` is one line: the step, the reason and what to do; main.py prints it and exits with status 1."""

    def __init__(self, step: int, reason: str, fix: str = ""):
        super().__init__(f"checkpoint step {step} is broken ({reason})" + (f"; {fix}" if fix else ""))
        self.step = step
        self.reason = reason
        self.fix = fix


class CheckpointMismatch(Exception):
    """A checkpoint whose files are fine but hold a different model than the config's (a changed config on an old
    workdir): nothing is moved or used; one line, exit status 1 from main.py."""


class RestoreFailed(Exception):
    """Restoring a checkpoint failed without proof of damage (a storage or memory fault, a library's error, an
    optimiser state of another config): nothing is moved and nothing is used; `str()` is one line with the cause and
    the way out, main.py prints it and exits with status 1."""

    def __init__(self, step: int, reason: str, step_dir: Any):
        super().__init__(
            f"restoring checkpoint step {step} failed ({reason}); nothing was moved. If the cause has passed (storage, "
            f"memory), re-run the same command; to use an older step instead, move {step_dir} away"
        )
        self.step, self.reason, self.step_dir = step, reason, str(step_dir)


class Resumed(NamedTuple):
    """What a training run resumes from: the step (None: nothing), the model variables and the optimiser state
    ({step, opt_state}; None where the step ends a stage)."""

    step: int | None
    model: Any
    opt: Any


def _record(e: Exception) -> list:
    """An exception of this module (or a StorageError) as JSON-able fields, to be raised alike on every process."""
    if isinstance(e, BrokenCheckpoint):
        return ["broken", e.step, e.reason, e.fix]
    if isinstance(e, RestoreFailed):
        return ["failed", e.step, e.reason, e.step_dir]
    return ["mismatch" if isinstance(e, CheckpointMismatch) else "storage", str(e)]


def _from_record(r: list) -> Exception:
    kind, *fields = r
    if kind == "broken":
        return BrokenCheckpoint(*fields)
    if kind == "failed":
        return RestoreFailed(*fields)
    return CheckpointMismatch(*fields) if kind == "mismatch" else paths.StorageError(*fields)


def _shapes(tree: Any) -> dict[str, tuple]:
    return {jax.tree_util.keystr(p): tuple(x.shape) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _sha256(path: epath.Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(8 << 20):  # hashlib releases the GIL on chunks this size: training goes on meanwhile
            h.update(chunk)
    return h.hexdigest()


def _files(root: epath.Path, prefix: str = "") -> list[str]:
    """Relative paths of every file under `root` (local or remote), sorted."""
    out = []
    for p in root.iterdir():
        rel = f"{prefix}{p.name}"
        if p.is_dir():
            out += _files(p, rel + "/")
        else:
            out.append(rel)
    return sorted(out)


def file_manifest(step_dir: epath.Path) -> dict[str, list]:
    """{relative path: [size in bytes, sha256 hex]} for every file of a step folder but the manifest itself and
    the files Orbax writes at commit."""
    skip = (MANIFEST, *_ORBAX_COMMIT_FILES)
    return {rel: [(step_dir / rel).stat().length, _sha256(step_dir / rel)] for rel in _files(step_dir)
            if rel not in skip}


def _root_cause(e: BaseException) -> str:
    """The first line of the innermost exception of a chain (Orbax wraps TensorStore's precise message in a long
    one that prints the whole spec), shortened to one readable reason."""
    while (e.__cause__ or e.__context__) is not None:
        e = e.__cause__ or e.__context__
    lines = str(e).strip().splitlines()
    line = lines[0] if lines else type(e).__name__
    return (line if len(line) <= 240 else line[:237] + "...") or type(e).__name__


def _quiet_abandoned_reads() -> None:
    """When one array fails to read, Orbax abandons the other reads' coroutines; each, when garbage-collected
    (maybe only at exit), prints 'Exception ignored in: <coroutine ...>' with TensorStore's whole spec: hundreds of
    stderr lines that bury the one reason. From the first failed restore on, such reports from Orbax's own
    coroutines are dropped (the failure itself is reported once, by `restore`); anything else passes through."""
    previous = sys.unraisablehook
    if getattr(previous, "zoomin_quiet", False):
        return

    def from_orbax(unraisable) -> bool:
        code = getattr(unraisable.object, "cr_code", None)
        files = [code.co_filename] if code is not None else []
        tb = unraisable.exc_traceback
        while tb is not None:  # the report may carry no object (None) but the coroutine's frames
            files.append(tb.tb_frame.f_code.co_filename)
            tb = tb.tb_next
        return any(f"{os.sep}orbax{os.sep}" in f for f in files)

    def hook(unraisable):
        if from_orbax(unraisable):
            return
        previous(unraisable)

    hook.zoomin_quiet = True
    sys.unraisablehook = hook


def _count_nonfinite(tree: Any) -> tuple[int, str | None]:
    """(number of non-finite values in the floating-point leaves, path of the first such leaf), computed on this
    host's shards (each array element once: replica 0) and summed over processes, so all agree."""
    bad, first = 0, None
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if not np.issubdtype(np.dtype(leaf.dtype), np.inexact):
            continue
        if isinstance(leaf, jax.Array):
            shards = [s.data for s in leaf.addressable_shards if s.replica_id == 0]
        else:
            shards = [leaf]
        n = sum(int(np.size(x) - np.count_nonzero(np.isfinite(np.asarray(x)))) for x in shards)
        if n and first is None:
            first = jax.tree_util.keystr(path)
        bad += n
    if jax.process_count() > 1:
        bad = int(np.sum(multihost_utils.process_allgather(np.int64(bad))))
    return bad, first


def _nbytes(tree: Any) -> int:
    """Uncompressed size of every array leaf (global shape), for arrays and ShapeDtypeStructs alike."""
    return sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree_util.tree_leaves(tree)
               if hasattr(x, "shape") and hasattr(x, "dtype"))


def _slug(reason: str) -> str:
    """A folder-name form of a reason, cut at a word boundary: 'model/ocdbt.process_0/d/9e2f sha256 mismatch' ->
    'model-ocdbt-process-0-d-9e2f-sha256-mismatch'."""
    slug = re.sub(r"[^a-z0-9]+", "-", reason.lower()).strip("-")
    return (slug if len(slug) <= 80 else slug[:80].rsplit("-", 1)[0]) or "broken"


class Checkpointer:
    """Saves and restores one run's checkpoints under `<workdir>/checkpoints`, with the checks of the module
    docstring."""

    _registered = False  # the array handler above, once per process

    def __init__(self, workdir: str, keep: int = 3, async_save: bool = True):
        if not Checkpointer._registered:
            _write_replicated_arrays_once()
            Checkpointer._registered = True
        self.directory = str(paths.join(paths.resolve(workdir), "checkpoints"))
        self.broken_directory = str(paths.join(paths.resolve(workdir), "checkpoints_broken"))
        self.is_lead = jax.process_index() == 0
        self._async = async_save
        self._saving: int | None = None  # the step of the save in flight (saves never overlap: Orbax waits)
        self._verified: set[int] = set()  # steps whose files matched their manifest in this process
        # The manifest is written by Orbax's commit thread, on the lead only, after all processes wrote.
        async_options = ocp.AsyncOptions(post_finalization_callback=self._write_manifest) if async_save else None
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save, create=True,
                                               async_options=async_options)
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("model", "opt", "data"))

    def step_dir(self, step: int) -> epath.Path:
        return paths.join(self.directory, str(step))

    def latest_step(self) -> int | None:
        """The newest committed checkpoint's step, or None (not verified: see `restore`)."""
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    # ----- saving -----

    def _write_manifest(self) -> None:
        """Fingerprints the step being saved. Async: called by Orbax before it renames the temporary folder (the
        manifest commits with the checkpoint); an exception here fails the save, which then never commits."""
        step = self._saving
        tmp = paths.join(self.directory, f"{step}{_TMP_MARK}")
        step_dir = tmp if tmp.exists() else self.step_dir(step)
        manifest = {"format": 1, "step": step, "hash": "sha256",
                    "restore_rule": "every floating-point value of every item must be finite",
                    "files": file_manifest(step_dir)}
        (step_dir / MANIFEST).write_text(json.dumps(manifest, indent=0))

    def check_free_space(self, need: int, what: str) -> None:
        """Raises paths.StorageError naming the folder, the free space and the need if `need` bytes do not fit.
        Decided by the lead (one shared file system) and shared, so every process stops together."""

        def measure():
            if not self.is_lead:
                return
            free = paths.free_bytes(self.directory)
            if free is not None and free < need:
                latest = self.latest_step()
                kept = f"the last checkpoint, step {latest}, is kept" if latest else "no checkpoint was saved yet"
                raise paths.StorageError(
                    f"not enough free space in {self.directory} for {what}: {paths.human_bytes(free)} free, about "
                    f"{paths.human_bytes(need)} needed; {kept}. Free some space there and re-run the same command"
                )

        self._together(self.latest_step() or 0, "measuring the free space", measure)

    def save_size(self, *trees: Any) -> int:
        """Bytes to ask for before saving `trees`: their uncompressed size plus a margin."""
        n = _nbytes(trees)
        return int(n * (1 + _SAVE_MARGIN_FRACTION)) + _SAVE_MARGIN_BYTES

    def save(self, step: int, model: Any, opt: Any, data_iterator: Any | None) -> None:
        """Starts an asynchronous save of `model` ({params, batch_stats}), `opt` and the iterator position, after
        the previous save has finished (Orbax waits for it anyway) and the free space has been checked.

        Raises:
          paths.StorageError: too little free space (nothing is written), or the previous / this save failed (its
            temporary folder removed).
        """
        self._wait_or_fail()
        self.check_free_space(self.save_size(model, opt), f"checkpoint step {step}")
        items = {"model": ocp.args.StandardSave(model), "opt": ocp.args.StandardSave(opt)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        self._saving = step
        try:
            self.manager.save(step, args=ocp.args.Composite(**items), force=True)
            if not self._async:  # committed already; only the async path fingerprints before the commit
                if self.is_lead:
                    self._write_manifest()
                self._saving = None
        except Exception as e:  # noqa: BLE001 - any failure of Orbax's save: one line, nothing temporary left
            self._failed_save(e)

    def _wait_or_fail(self) -> None:
        try:
            self.manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001 - an asynchronous save failed in Orbax's thread
            self._failed_save(e)
        self._saving = None

    def _failed_save(self, e: Exception) -> None:
        step, self._saving = self._saving, None
        self.remove_temporary()
        latest = self.latest_step()
        kept = f"the last checkpoint, step {latest}, is kept" if latest else "no checkpoint was saved yet"
        raise paths.StorageError(
            f"saving checkpoint step {step} in {self.directory} failed ({_root_cause(e)}; "
            f"{paths.human_bytes(paths.free_bytes(self.directory))} free there); its temporary folder was removed "
            f"and {kept}. Fix the cause and re-run the same command to resume"
        ) from None

    def remove_temporary(self) -> list[str]:
        """Removes Orbax's temporary step folders (left by a killed or failed save) on the lead; returns them.
        Call it only where no save of this run is in flight (at start, after a failed save)."""
        removed = []
        if self.is_lead and paths.join(self.directory).exists():
            for p in paths.join(self.directory).iterdir():
                if _TMP_MARK in p.name:
                    p.rmtree() if p.is_dir() else p.unlink()
                    removed.append(p.name)
        if removed:
            logging.warning("Removed temporary checkpoint folders of an unfinished save: %s", ", ".join(removed))
        return removed

    # ----- checking and restoring -----

    def has_manifest(self, step: int) -> bool:
        return (self.step_dir(step) / MANIFEST).exists()

    def verify(self, step: int) -> str | None:
        """Checks a step's files against its manifest: None when they match (or there is no manifest to check:
        see the module docstring), else the damage, naming the first bad file.

        Raises:
          OSError: a file could not be read (a storage fault, not damage: the caller stops, moving nothing).
        """
        step_dir = self.step_dir(step)
        if not step_dir.exists():
            return "its folder is missing"
        mf = step_dir / MANIFEST
        if not mf.exists():
            return None
        try:
            files = json.loads(mf.read_text())["files"]
            sizes = {rel: int(size) for rel, (size, _) in files.items()}
        except (ValueError, KeyError, TypeError, AttributeError) as e:  # what it holds, not whether it could be read
            return f"{MANIFEST} unreadable: {_root_cause(e)}"
        problems = []
        for rel, size in sizes.items():  # sizes first: cheap, and most damage shows there
            p = step_dir / rel
            if not p.exists():
                problems.append(f"{rel} missing")
            elif (actual := p.stat().length) != size:
                problems.append(f"{rel} is {actual} bytes, {size} expected")
        if not problems:
            for rel, (_, digest) in files.items():
                if _sha256(step_dir / rel) != digest:
                    problems.append(f"{rel} sha256 mismatch")
        if not problems:
            return None
        return problems[0] + (f" and {len(problems) - 1} more" if len(problems) > 1 else "")

    def _together(self, step: int, what: str, fn: Callable[[], Any]) -> Any:
        """`fn()` on every process, then every outcome shared (`agree.first_failure`): where it raised on any
        process, every process raises the same exception with the same text; otherwise this process's result.
        An exception other than this module's (a storage or memory fault, a library's error) proves no damage:
        it becomes `RestoreFailed`, naming `what` was being done and on which process."""
        error = None
        result = None
        try:
            result = fn()
        except (BrokenCheckpoint, RestoreFailed, CheckpointMismatch, paths.StorageError) as e:
            error = e
        except Exception as e:  # noqa: BLE001 - whatever Orbax, TensorStore or the storage raise: one reason
            _quiet_abandoned_reads()
            logging.debug("%s of checkpoint step %d failed", what, step, exc_info=True)  # --v=1 shows it
            error = RestoreFailed(step, f"{what}{agree.where(jax.process_index())}: {_root_cause(e)}",
                                  self.step_dir(step))
        failure = agree.first_failure(None if error is None else json.dumps(_record(error)))
        if failure is None:
            return result
        raise _from_record(json.loads(failure[1]))

    def _check_files(self, step: int, fix: str) -> None:
        """The lead's `verify`, shared (an unreadable file stops every process; damage raises BrokenCheckpoint on
        all); a step that passed is not hashed again in this process."""
        if step in self._verified:
            return

        def check():
            reason = self.verify(step) if self.is_lead else None
            if reason is not None:
                raise BrokenCheckpoint(step, reason, fix)

        self._together(step, "reading its files", check)
        self._verified.add(step)

    def restore(self, step: int, model: Any | None, opt: Any | None = None, fix: str = "") -> dict:
        """Restores the items asked for, after checking the step's files; refuses a non-finite value.

        Every process agrees on each outcome before the next one (`_together`), so a fault on one host stops all
        of them with the same line. The data position is restored apart (`saved_position`): it is not the model.

        Args:
          step: which checkpoint.
          model: abstract target of {params, batch_stats} (see `abstract_with_sharding`), or None to skip it.
          opt: abstract target of {step, opt_state}, or None to skip the optimiser.
          fix: what the user should do, appended to a BrokenCheckpoint's message (default: move the step away).

        Returns:
          {'model': ..., 'opt': ... (if asked)}.

        Raises:
          BrokenCheckpoint: proven damage only: files not matching the manifest, a file it lists missing, or a
            non-finite value.
          CheckpointMismatch: the saved model's arrays are not the config's.
          RestoreFailed: anything else (storage, memory, a library's error): nothing to move, the run stops.
        """
        fix = fix or f"move {self.step_dir(step)} away (or remove it) to use an older checkpoint"
        self._check_files(step, fix)
        out = self._together(step, "reading its arrays", lambda: self._read(step, model, opt))
        bad, where = _count_nonfinite(out)  # summed over processes: all agree
        if bad:
            raise BrokenCheckpoint(step, f"{bad} non-finite values, the first in {where}", fix)
        return out

    def _read(self, step: int, model: Any | None, opt: Any | None) -> dict:
        """This process's part of the items, item by item through Orbax's handler, which (unlike the manager's
        restore) ends in no barrier: a process that fails here still reaches the agreement in `_together`."""
        if model is not None:
            self._check_same_model(step, model)
        out = {}
        for name, target in (("model", model), ("opt", opt)):
            if target is not None:
                handler = ocp.StandardCheckpointHandler()
                try:
                    out[name] = handler.restore(self.step_dir(step) / name, args=ocp.args.StandardRestore(target))
                finally:
                    handler.close()
        return out

    def _check_same_model(self, step: int, model: Any) -> None:
        """Compares the saved model's array shapes (Orbax's metadata, no data read) with the target's, so that a
        changed config stops the run instead of failing in the middle of reading.

        Raises:
          CheckpointMismatch: other arrays or shapes than the target's.
        """
        saved = _shapes(ocp.StandardCheckpointHandler().metadata(self.step_dir(step) / "model"))
        want = _shapes(model)
        if saved != want:
            diff = sorted(set(saved.items()) ^ set(want.items()))
            path = diff[0][0]
            raise CheckpointMismatch(
                f"checkpoint step {step} in {self.directory} holds a different model than this config "
                f"({len(set(saved) ^ set(want))} arrays only on one side; e.g. {path}: "
                f"{saved.get(path, 'absent')} saved, {want.get(path, 'absent')} expected). Use the config it was "
                "trained with (config.json in its workdir) or another --workdir"
            )

    def saved_position(self, step: int) -> tuple[dict | None, str | None]:
        """This process's data-iterator position saved with `step`, as grain's checkpoint handler wrote it
        (`data/process_<i>-of-<P>.json`): (state, None), or (None, why it cannot be used). Never raises: the
        position can always be derived from the step instead (`input_pipeline.train_iterator(start_step=)`)."""
        data = self.step_dir(step) / "data"
        name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        try:
            if not (data / name).exists():
                saved = sorted(p.name for p in data.iterdir()) if data.exists() else []
                counts = sorted({m.group(1) for p in saved if (m := re.match(r"process_\d+-of-(\d+)\.json$", p))})
                return None, (f"saved by {' or '.join(counts)} process(es), this run has {jax.process_count()}"
                              if counts else "none was saved")
            state = json.loads((data / name).read_text())
        except (OSError, ValueError) as e:
            return None, f"unreadable: {_root_cause(e)}"
        if not isinstance(state, dict):
            return None, f"unreadable: a JSON {type(state).__name__}, not an iterator state"
        return state, None

    def quarantine(self, step: int, reason: str) -> str:
        """Moves a broken step out of Orbax's sight to `checkpoints_broken/<step>-<reason>` (the lead moves; every
        process learns the outcome, a failed move stopping all of them, then reloads the step list). Returns the
        new path."""
        dest = paths.join(self.broken_directory, f"{step}-{_slug(reason)}")

        def move():
            nonlocal dest
            if not self.is_lead:
                return
            paths.ensure_dir(self.broken_directory)
            k = 1
            while dest.exists():
                k += 1
                dest = paths.join(self.broken_directory, f"{step}-{_slug(reason)}-{k}")
            if paths.is_remote(self.directory):
                self.step_dir(step).rename(dest)
            else:
                shutil.move(str(self.step_dir(step)), str(dest))

        self._together(step, f"moving it aside to {self.broken_directory}", move)
        self.manager.reload()
        self._verified.discard(step)
        return str(dest)

    def restore_newest_good(self, model: Any, opt_target: Callable[[int], Any] | None = None) -> Resumed:
        """Training's resume: the newest step that verifies and restores finite, with its model and (where
        `opt_target(step)` is not None) optimiser state. A newer step is moved aside (`quarantine`) and reported in
        one line only on proven damage (`BrokenCheckpoint`); any other failure stops the run, moving nothing.

        Args:
          model: abstract target of {params, batch_stats}.
          opt_target: step -> abstract target of {step, opt_state} for a resume inside a stage, or None (a stage's
            end: the next stage starts a fresh optimiser).

        Returns:
          `Resumed(step, model, opt)`; step None (and both None) when no good checkpoint is left.

        Raises:
          RestoreFailed, CheckpointMismatch: as `restore`.
        """
        broken = []
        found = Resumed(None, None, None)
        for step in reversed(self.all_steps()):
            opt = opt_target(step) if opt_target is not None else None
            try:
                out = self.restore(step, model, opt)
                found = Resumed(step, out["model"], out.get("opt"))
                break
            except BrokenCheckpoint as e:
                broken.append((step, e.reason, self.quarantine(step, e.reason)))
        after = (f"resuming from step {found.step}" if found.step is not None
                 else "no good checkpoint left, starting afresh")
        for step, reason, dest in broken:
            line = f"checkpoint step {step} is broken ({reason}); {after}; moved to {dest}"
            logging.warning("%s", line)
            if self.is_lead:
                print(line, flush=True)
        if found.step is not None and not self.has_manifest(found.step):
            logging.warning("Checkpoint step %d has no %s (older than the integrity check?): accepted because it "
                            "restored without error and is finite", found.step, MANIFEST)
        return found

    def newest_intact_step(self, other_than: int | None = None) -> int | None:
        """The newest step (other than `other_than`) whose files match its manifest, without restoring it; for
        messages."""
        for step in reversed(self.all_steps()):
            try:
                if step != other_than and self.verify(step) is None:
                    return step
            except OSError:  # unreadable now: not offered
                continue
        return None

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are on disk.

        Raises:
          paths.StorageError: the save failed (its temporary folder removed).
        """
        self._wait_or_fail()

    def close(self) -> None:
        try:
            self._wait_or_fail()
        finally:
            self.manager.close()
