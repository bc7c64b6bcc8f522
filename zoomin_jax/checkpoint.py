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
- `restore` checks the files against the manifest first, turns any exception from Orbax into one readable reason,
  and refuses a restore with a non-finite floating-point value (the manifest records that rule; a NaN never
  reaches a checkpoint on purpose: training stops before saving one). Each failure is a `BrokenCheckpoint`.
- A step whose saved array shapes differ from the target's (Orbax's metadata) is not broken but from another
  config: `CheckpointMismatch` stops the run, nothing moved.
- A step without a manifest (written before this check existed, or by a storage whose commit does not rename)
  is accepted only if it restores without an exception and is finite; its bytes cannot be checked.
- Training resumes from the newest good step (`restore_newest_good`); each broken newer one is reported in one
  line and moved to `<workdir>/checkpoints_broken/<step>-<reason>` (kept for forensics, out of Orbax's sight, so
  a later save of the same step works). `--mode=eval` refuses a broken step, naming the newest intact one.

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
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from zoomin_jax import paths


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


class CheckpointMismatch(Exception):
    """A checkpoint whose files are fine but hold a different model than the config's (a changed config on an old
    workdir): nothing is moved or used; one line, exit status 1 from main.py."""


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


def _agree(value: int) -> int:
    """The lead's value on every process (a no-op with one process)."""
    if jax.process_count() == 1:
        return value
    return int(multihost_utils.broadcast_one_to_all(np.int64(value)))


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
        Decided by the lead (one shared file system), so every process stops together."""
        free = paths.free_bytes(self.directory) if self.is_lead else None
        short = _agree(int(free is not None and free < need))
        if short:
            latest = self.latest_step()
            kept = f"the last checkpoint, step {latest}, is kept" if latest else "no checkpoint was saved yet"
            raise paths.StorageError(
                f"not enough free space in {self.directory} for {what}: {paths.human_bytes(free)} free, about "
                f"{paths.human_bytes(need)} needed; {kept}. Free some space there and re-run the same command"
            )

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
        see the module docstring), else the reason, naming the first bad file."""
        step_dir = self.step_dir(step)
        if not step_dir.exists():
            return "its folder is missing"
        mf = step_dir / MANIFEST
        if not mf.exists():
            return None
        try:
            files = json.loads(mf.read_text())["files"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            return f"{MANIFEST} unreadable: {_root_cause(e)}"
        problems = []
        for rel, (size, _) in files.items():  # sizes first: cheap, and most damage shows there
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

    def _verify_once(self, step: int) -> str | None:
        """`verify` on the lead, its verdict shared; a step that passed is not hashed again in this process."""
        if step in self._verified:
            return None
        reason = self.verify(step) if self.is_lead else None
        if _agree(int(reason is not None)):
            return reason or "its files do not match the manifest (see process 0's log)"
        self._verified.add(step)
        return None

    def restore(self, step: int, model: Any | None, opt: Any | None = None, data_iterator: Any | None = None,
                fix: str = "") -> dict:
        """Restores the items asked for, after checking the step's files; refuses a non-finite value.

        Args:
          step: which checkpoint.
          model: abstract target of {params, batch_stats} (see `abstract_with_sharding`), or None to skip it.
          opt: abstract target of {step, opt_state}, or None to skip the optimiser.
          data_iterator: a grain iterator whose position is set in place, or None.
          fix: what the user should do, appended to a BrokenCheckpoint's message (default: move the step away).

        Returns:
          {'model': ..., 'opt': ... (if asked)}.

        Raises:
          BrokenCheckpoint: files not matching the manifest, any exception from Orbax, or a non-finite value.
        """
        fix = fix or f"move {self.step_dir(step)} away (or remove it) to use an older checkpoint"
        if (reason := self._verify_once(step)) is not None:
            raise BrokenCheckpoint(step, reason, fix)
        if model is not None:
            self._check_same_model(step, model, fix)
        position = data_iterator.get_state() if data_iterator is not None else None  # put back if refused
        items = {}
        if model is not None:
            items["model"] = ocp.args.StandardRestore(model)
        if opt is not None:
            items["opt"] = ocp.args.StandardRestore(opt)
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(**items))
            out = {k: restored[k] for k in ("model", "opt") if k in items}
            bad, where = _count_nonfinite(out)
        except Exception as e:  # noqa: BLE001 - whatever Orbax, TensorStore or grain raise: one readable reason
            _quiet_abandoned_reads()
            logging.info("Restoring step %d failed", step, exc_info=True)
            bad, where = None, f"restore failed: {_root_cause(e)}"
        if bad is None or bad:
            if data_iterator is not None:  # its position may have been restored before the failure
                data_iterator.set_state(position)
            raise BrokenCheckpoint(step, where if bad is None else f"{bad} non-finite values, the first in {where}",
                                   fix)
        return out

    def _check_same_model(self, step: int, model: Any, fix: str) -> None:
        """Compares the saved model's array shapes (Orbax's metadata, no data read) with the target's, so that a
        changed config stops the run instead of having every checkpoint taken for broken and moved aside.

        Raises:
          BrokenCheckpoint: the metadata cannot be read.
          CheckpointMismatch: other arrays or shapes than the target's.
        """
        try:
            saved = _shapes(ocp.StandardCheckpointHandler().metadata(self.step_dir(step) / "model"))
        except Exception as e:  # noqa: BLE001 - unreadable metadata is damage like any other
            _quiet_abandoned_reads()
            raise BrokenCheckpoint(step, f"model metadata unreadable: {_root_cause(e)}", fix) from None
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

    def quarantine(self, step: int, reason: str) -> str:
        """Moves a broken step out of Orbax's sight to `checkpoints_broken/<step>-<reason>` (the lead moves; all
        processes then reload the step list). Returns the new path."""
        dest = paths.join(self.broken_directory, f"{step}-{_slug(reason)}")
        if self.is_lead:
            paths.ensure_dir(self.broken_directory)
            k = 1
            while dest.exists():
                k += 1
                dest = paths.join(self.broken_directory, f"{step}-{_slug(reason)}-{k}")
            if paths.is_remote(self.directory):
                self.step_dir(step).rename(dest)
            else:
                shutil.move(str(self.step_dir(step)), str(dest))
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"zoomin_jax quarantine {step}")
        self.manager.reload()
        self._verified.discard(step)
        return str(dest)

    def restore_newest_good(self, model: Any, data_iterator: Any | None = None) -> tuple[int | None, Any]:
        """Training's resume: the newest step that verifies and restores finite, with its model and the data
        position. Each broken newer step is moved aside (`quarantine`) and reported in one line.

        Returns:
          (step, model variables), or (None, None) when no good checkpoint is left.
        """
        broken = []
        found, variables = None, None
        for step in reversed(self.all_steps()):
            try:
                variables = self.restore(step, model, data_iterator=data_iterator)["model"]
                found = step
                break
            except BrokenCheckpoint as e:
                broken.append((step, e.reason, self.quarantine(step, e.reason)))
        after = f"resuming from step {found}" if found is not None else "no good checkpoint left, starting afresh"
        for step, reason, dest in broken:
            line = f"checkpoint step {step} is broken ({reason}); {after}; moved to {dest}"
            logging.warning("%s", line)
            if self.is_lead:
                print(line, flush=True)
        if found is not None and not self.has_manifest(found):
            logging.warning("Checkpoint step %d has no %s (older than the integrity check?): accepted because it "
                            "restored without error and is finite", found, MANIFEST)
        return found, variables

    def newest_intact_step(self, other_than: int | None = None) -> int | None:
        """The newest step (other than `other_than`) whose files match its manifest, without restoring it; for
        messages."""
        for step in reversed(self.all_steps()):
            if step != other_than and self.verify(step) is None:
                return step
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
