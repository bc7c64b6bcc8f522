"""Every shipped config loads, can work on 8 devices and documents its command first; the full config's recipe:
stages in epochs resolved to steps, learning rates rescaled with the batch, the ImageNet weight file required
before anything is prepared or compiled (and an explicit way out)."""

import importlib
import json
import math
import pathlib

import pytest

from configs import full
from zoomin_jax import init_from, schedule, train
from zoomin_jax.data import datasets, input_pipeline
from zoomin_jax.train_step import stages
from zoomin_jax.validate import validate_config

CONFIGS = sorted(p.stem for p in (pathlib.Path(__file__).parent.parent / "configs").glob("*.py"))
EYEPACS_TRAIN = 35_126  # photographs in Kaggle's trainLabels.csv


@pytest.mark.parametrize("name", CONFIGS)
def test_config_is_valid_and_documented(name):
    module = importlib.import_module(f"configs.{name}")
    c = module.get_config()
    validate_config(c, 8)
    doc = module.__doc__.split("\n\n", 1)[1]
    assert doc.startswith("Command:") and "python -m zoomin_jax.main" in doc
    assert "Hardware:" in module.__doc__
    c = schedule.resolve(c, EYEPACS_TRAIN)  # as training does; stages in steps pass unchanged
    plan = stages(c)
    assert all(s.end > s.begin for s in plan) and set(c.stage_order) <= set(c.stages)


def test_configs_found():
    assert {"default", "full", "idrid", "messidor_eval"} <= set(CONFIGS)


def test_pretrain_config_sees_photographs_at_its_target_configs_m_net_size():
    # The backbone is pretrained at the scale the config it starts will meet the photographs at; the sizes are read
    # from the target configs here, so a target that changes its M-Net input changes the pretraining with it.
    pretrain = importlib.import_module("configs.eyepacs256_pretrain")
    for target in ("idrid", "eyepacs"):
        want = importlib.import_module(f"configs.{target}").get_config().model
        got = pretrain.get_config(target)
        assert got.model.low_res_size == want.low_res_size and got.model.image_size == 256  # stored 256 px
        validate_config(got, 8)
    assert pretrain.get_config().model.low_res_size == 160  # the default target is idrid
    assert pretrain.get_config("eyepacs").model.low_res_size == 256  # not the same size: the argument matters
    with pytest.raises(ValueError, match=r"no such target.*\['eyepacs', 'idrid'\]"):
        pretrain.get_config("messidor")


# ---- epochs -> steps, lr -> batch ----


def test_epochs_to_steps_hand_worked():
    # 2 epochs of 35,126 photographs at 32 a step: 70,252 / 32 = 2,195.375, so 2,196 steps (the last one partly new).
    assert schedule.epochs_to_steps(2, EYEPACS_TRAIN, 32) == 2196
    assert schedule.epochs_to_steps(1, 64, 32) == 2  # exact: no extra step
    assert schedule.epochs_to_steps(0.1, 320, 32) == 1  # 0.1 * 320 / 32 is 1.0000000000000002 in floats
    assert schedule.epochs_to_steps(0.5, 33, 32) == 1
    with pytest.raises(ValueError):
        schedule.epochs_to_steps(0, 100, 32)


def test_full_config_resolves_to_the_documented_steps_and_rescales_lr_with_the_batch():
    c = full.get_config()
    with pytest.raises(ValueError, match="schedule.resolve"):
        stages(c)  # epochs not yet turned into steps
    r = schedule.resolve(c, EYEPACS_TRAIN)
    # 25, 5, 15, 5 epochs at 32: 878,150 / 32 = 27,442.19; 175,630 / 32 = 5,488.44; 526,890 / 32 = 16,465.31.
    assert [r.stages[s].steps for s in r.stage_order] == [27443, 5489, 16466, 5489]
    assert [r.stages[s].lr for s in r.stage_order] == [c.stages[s].lr for s in c.stage_order]  # batch = reference
    assert c.stages.mnet.steps == 0  # the input is left as it was
    assert schedule.resolve(r, EYEPACS_TRAIN).to_dict() == r.to_dict()  # resolving twice changes nothing

    c.batch_size = 128  # 4x the reference batch: Adam's square-root rule doubles every lr
    r = schedule.resolve(c, EYEPACS_TRAIN)
    assert r.stages.mnet.steps == math.ceil(25 * EYEPACS_TRAIN / 128) == 6861
    for s in c.stage_order:
        assert r.stages[s].lr == pytest.approx(2 * c.stages[s].lr)
    c.optimizer.name = "sgd"  # linear rule: 4x
    assert schedule.resolve(c, EYEPACS_TRAIN).stages.anet.lr == pytest.approx(4 * c.stages.anet.lr)
    # The default config is in steps with lrs used as given: nothing changes.
    d = importlib.import_module("configs.default").get_config()
    assert schedule.resolve(d, 123).to_dict() == d.to_dict()


# ---- the ImageNet weight file: required, checked first, with a way out ----


class _Reached(Exception):
    """Raised by the stand-ins below: training got past the weight-file check."""


@pytest.fixture
def guarded(monkeypatch, tmp_path):
    """Home in tmp_path (no ~/.keras there); the dataset and the model are stand-ins that stop the run."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    built = []

    def no_data(config):
        raise _Reached("dataset opened")

    def no_model(config):
        built.append(config)
        raise _Reached("model built")

    monkeypatch.setattr(datasets, "check_splits", lambda config: None)  # no dataset here to hold the splits
    monkeypatch.setattr(input_pipeline, "num_train_examples", no_data)
    monkeypatch.setattr(input_pipeline, "train_iterator", no_data)
    monkeypatch.setattr(train, "build", no_model)
    return built


def test_missing_imagenet_weights_stop_the_run_before_data_or_compiling(guarded, tmp_path):
    c = full.get_config()
    with pytest.raises(FileNotFoundError) as err:
        train.train_and_evaluate(c, str(tmp_path / "run"))
    message = str(err.value)
    assert init_from.KERAS_WEIGHTS in message and "keras.applications.InceptionResNetV2" in message
    assert "config.init_from='~/.keras/models/" in message  # where it looked
    assert "--config.init_from=''" in message  # the way out is named
    assert not guarded


def test_weights_present_opt_out_or_resume_pass_the_check(guarded, tmp_path, monkeypatch):
    run = tmp_path / "run"
    c = full.get_config()
    c.init_from = ""  # the explicit opt-out: random initialisation
    with pytest.raises(_Reached, match="dataset opened"):
        train.train_and_evaluate(c, str(run))

    c = full.get_config()
    (run / "checkpoints" / "2196").mkdir(parents=True)  # a run to resume: init_from is not needed
    with pytest.raises(_Reached):
        train.train_and_evaluate(c, str(run))

    weights = tmp_path / "home" / ".keras" / "models" / init_from.KERAS_WEIGHTS
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"")  # only its presence is checked here (tests/test_keras_h5.py reads real files)
    c = full.get_config()
    monkeypatch.setattr(input_pipeline, "num_train_examples", lambda config: EYEPACS_TRAIN)
    with pytest.raises(_Reached, match="model built"):
        train.train_and_evaluate(c, str(tmp_path / "fresh"))
    # Training sees the resolved recipe, and writes it to the workdir.
    assert guarded[-1].stages.mnet.steps == 27443
    written = json.loads((tmp_path / "fresh" / "config.json").read_text())
    assert written["stages"]["joint"]["steps"] == 5489


def test_weights_for_a_reduced_network_are_refused_before_the_file_is_looked_for(tmp_path):
    c = full.get_config()
    c.model.cnet.width = 0.5
    with pytest.raises(ValueError, match="model.cnet.width=0.5"):
        init_from.check(c, str(tmp_path / "run"))
    c = full.get_config()
    c.init_from = str(tmp_path / "elsewhere")  # a workdir to start from that does not exist
    with pytest.raises(FileNotFoundError, match="does not exist: pass another run's workdir"):
        init_from.check(c, str(tmp_path / "run"))
