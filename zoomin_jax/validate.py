"""Checks that a config can work, before anything is traced or compiled; errors name the numbers."""

from __future__ import annotations

import ml_collections

from zoomin_jax import regions
from zoomin_jax.fusion_init import FUSION_INITS
from zoomin_jax.models import inception_resnet as irv2
from zoomin_jax.models.zoom_in import DTYPES, POOLINGS, cell_centres
from zoomin_jax.train_step import PATCH_LABELS


class ConfigError(ValueError):
    """A config that cannot work; the message says which field, its value, and what would."""


def validate_config(config: ml_collections.ConfigDict, num_devices: int, num_processes: int = 1,
                    local_devices: int | None = None) -> None:
    """Raises ConfigError listing every field that cannot work (call it before anything is created or compiled).

    Args:
      config: a full config (configs/default.py schema).
      num_devices: devices visible to the run, all processes together (`jax.device_count()`); the mesh's data axis
        is all of them (mesh.data=-1) or the first mesh.data.
      num_processes: `jax.process_count()`; each feeds batch / num_processes rows to its own devices.
      local_devices: this process's devices (`jax.local_device_count()`; default num_devices / num_processes).
    """
    m = config.model
    r = m.regions
    problems = []
    if m.low_res_size < irv2.MIN_INPUT_SIZE:
        problems.append(f"model.low_res_size={m.low_res_size} is below the backbone's minimum {irv2.MIN_INPUT_SIZE}")
    if m.low_res_size > m.image_size:
        problems.append(f"model.low_res_size={m.low_res_size} exceeds model.image_size={m.image_size}")
    if r.patch_size > m.image_size:
        problems.append(
            f"model.regions.patch_size={r.patch_size} is larger than the high-res image "
            f"(model.image_size={m.image_size}); use a patch of at most {m.image_size}"
        )
    elif r.patch_size < irv2.MIN_INPUT_SIZE:
        problems.append(f"model.regions.patch_size={r.patch_size} is below C-Net's minimum input {irv2.MIN_INPUT_SIZE}")
    cnet_input = m.cnet.get("input_size", 0)
    if not (cnet_input == 0 or (isinstance(cnet_input, int) and cnet_input >= irv2.MIN_INPUT_SIZE)):
        problems.append(f"model.cnet.input_size={cnet_input!r} must be 0 (the patch as cut) or an integer side "
                        f">= C-Net's minimum input {irv2.MIN_INPUT_SIZE}")
    for net in ("mnet", "cnet"):
        reps = tuple(m[net].repeats)
        if len(reps) != 3 or min(reps) < 1:
            problems.append(f"model.{net}.repeats={reps} must be three counts >= 1 (block35, block17, block8)")
        if not m[net].width > 0:
            problems.append(f"model.{net}.width={m[net].width} must be positive")
    names = irv2.endpoint_names(tuple(m.mnet.repeats)) if not problems else []
    if names and m.anet.endpoint not in names:
        stage = {f"block{s}": s for s in (35, 17, 8)}
        last = [n for n in names if n.endswith("_ac") and n.startswith(tuple(stage))][-1:]
        problems.append(
            f"model.anet.endpoint={m.anet.endpoint!r} does not exist for M-Net repeats {tuple(m.mnet.repeats)}; "
            f"choose one of {names[0]!r}, ..., {names[-1]!r} (e.g. {last or names[-1:]})"
        )
    elif names:
        # The same cell centres and disc rule as the model's selection (zoom_in.cell_centres).
        centres = cell_centres(m.anet.endpoint, m.low_res_size, m.image_size, tuple(m.mnet.repeats))
        side = len(centres[0])
        disc = r.disc_radius
        cells = int(regions.allowed_cells(centres, m.image_size, disc).sum())
        per_map = r.num_regions
        if not 1 <= per_map <= cells:
            where = f" inside disc_radius={disc}" if disc is not None else ""
            problems.append(
                f"model.regions.num_regions={r.num_regions} cannot be chosen from the {cells} cells{where} of the "
                f"{side}x{side} map {m.anet.endpoint} at low_res_size={m.low_res_size}"
            )
    if not 0.0 <= r.optic_disc_radius <= 1.0:
        problems.append(f"model.regions.optic_disc_radius={r.optic_disc_radius} must be 0 (off) or in (0, 1], "
                        "a fraction of the image side")
    if not 0.0 < r.optic_disc_window <= 0.5:
        problems.append(f"model.regions.optic_disc_window={r.optic_disc_window} must be in (0, 0.5], a fraction of "
                        "the low-res side")
    if not config.data.cache_gb >= 0:
        problems.append(f"data.cache_gb={config.data.cache_gb} must be >= 0 (GiB of decoded training images per "
                        "process; 0: none)")
    aug = config.data.augment
    for field in ("brightness", "contrast", "scale"):
        if not 0.0 <= aug[field] < 1.0:
            problems.append(f"data.augment.{field}={aug[field]} must lie in [0, 1): factors are drawn from "
                            f"[1 - {field}, 1 + {field}]")
    if r.map not in ("gated", "attention"):
        problems.append(f"model.regions.map={r.map!r} must be 'gated' or 'attention'")
    if r.reduce not in ("max", "per_level"):
        problems.append(f"model.regions.reduce={r.reduce!r} must be 'max' or 'per_level'")
    levels = tuple(r.levels)
    if not levels or any(not 0 <= lv < m.num_classes for lv in levels):
        problems.append(f"model.regions.levels={levels} must be non-empty grades in 0..{m.num_classes - 1}")
    if not 0.0 <= r.iou_threshold <= 1.0:
        problems.append(f"model.regions.iou_threshold={r.iou_threshold} must lie in [0, 1]")
    if config.get("patch_labels", "image") not in PATCH_LABELS:
        problems.append(f"patch_labels={config.patch_labels!r} must be one of {PATCH_LABELS}")
    if m.get("fusion_init", "fresh") not in FUSION_INITS:
        problems.append(f"model.fusion_init={m.fusion_init!r} must be one of {FUSION_INITS}")
    if m.pooling not in POOLINGS:
        problems.append(f"model.pooling={m.pooling!r} must be one of {POOLINGS}")
    if m.dtype not in DTYPES:
        problems.append(f"model.dtype={m.dtype!r} must be one of {sorted(DTYPES)}")
    for field in ("clusters", "iterations", "restarts", "mosaic_patches", "mosaic_px"):
        if not _positive_int(config.mine[field]):
            problems.append(f"mine.{field}={config.mine[field]!r} must be a positive integer")
    if not 0.0 < config.referral.sensitivity <= 1.0:
        problems.append(f"referral.sensitivity={config.referral.sensitivity} must be in (0, 1]: the share of "
                        "referable photographs the referral operating point refers")
    if m.get("pair_eyes", False):  # batches of whole patients on every process: rows 2k, 2k + 1 one patient
        for field, global_batch in (("batch_size", config.batch_size), ("data.eval_batch_size",
                                                                          config.data.eval_batch_size)):
            if _positive_int(global_batch) and (global_batch // max(num_processes, 1)) % 2:
                problems.append(f"{field}={global_batch} gives {global_batch // max(num_processes, 1)} rows per "
                                "process: model.pair_eyes needs an even number (two eyes a patient)")
    problems += _device_problems(config, num_devices, num_processes, local_devices)
    if problems:
        raise ConfigError("Config cannot work:\n  - " + "\n  - ".join(problems))


def validate_stages(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError when `stage_order` names a stage `stages` does not define, or when the pair head and
    `model.pair_eyes` disagree (one without the other) (training only: evaluation does not read the stages)."""
    order = tuple(config.stage_order)
    unknown = [s for s in order if s not in config.stages]
    if unknown or not order:
        hint = ""
        if any("," in s for s in unknown):
            hint = (" (on the command line a tuple is written --config.stage_order=\"('mnet', 'cnet')\"; "
                    "'mnet,cnet' is one name)")
        raise ConfigError(f"Config cannot work:\n  - stage_order={order} names {unknown or 'no stage'}: choose from "
                          f"the defined stages {sorted(config.stages)}{hint}")
    trains_pair = [s for s in order if "pair" in tuple(config.stages[s].trainable)]
    if config.model.get("pair_eyes", False) and not trains_pair:  # else the "Both eyes" head is reported untrained
        raise ConfigError(f"Config cannot work:\n  - model.pair_eyes=True but no stage of stage_order={order} trains "
                          "the pair head, which would be reported at its random initialisation: add the pair stage, "
                          f"--config.stage_order=\"{order + ('pair',)}\"")
    if trains_pair and not config.model.get("pair_eyes", False):
        raise ConfigError(f"Config cannot work:\n  - stage(s) {trains_pair} train the pair head, which exists only "
                          "with --config.model.pair_eyes=True: set it, or leave the pair stage out of stage_order")


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _device_problems(config: ml_collections.ConfigDict, num_devices: int, num_processes: int,
                     local_devices: int | None) -> list[str]:
    """The mesh and batch-size rules: every device gets whole rows, every process the same share of them."""
    data = config.mesh.data
    if isinstance(data, bool) or not isinstance(data, int) or not (data == -1 or 1 <= data <= num_devices):
        return [f"mesh.data={data!r} must be -1 (all {num_devices} devices) or a device count in 1..{num_devices}"]
    axis = num_devices if data == -1 else data
    if num_processes > 1 and axis != num_devices:
        return [f"mesh.data={data} uses {axis} of the {num_devices} devices, but each of the {num_processes} "
                "processes feeds its own devices, so the mesh must span them all: use mesh.data=-1"]
    local = axis if num_processes == 1 else (local_devices or num_devices // num_processes)  # on the mesh
    if local * num_processes != axis:
        return [f"{num_processes} processes with {local} devices each do not make up the {axis} devices of the data "
                "axis: give every process the same number of devices"]
    problems = []
    for field, value in (("batch_size", config.batch_size), ("data.eval_batch_size", config.data.eval_batch_size)):
        if not _positive_int(value):
            problems.append(f"{field}={value!r} must be a positive integer, a multiple of the {axis} devices of the "
                            f"data axis (e.g. {axis})")
        elif value % axis:
            split = ""
            if num_processes > 1 and value % num_processes:
                split = f" ({value} rows do not split evenly over {num_processes} processes)"
            elif num_processes > 1:
                split = f" (each of {num_processes} processes would feed {value // num_processes} rows to {local} "
                split += "devices)"
            problems.append(f"{field}={value} is not divisible by the {axis} devices of the data axis{split}; "
                            f"use a multiple of {axis} (e.g. {axis * max(1, round(value / axis))})")
    return problems
