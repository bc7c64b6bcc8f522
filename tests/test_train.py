"""End to end on a tiny synthetic dataset: staged training, preemption + crash + resume, eval in a new process."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from tiny import tiny_config

from zoomin_jax import ablation, checkpoint, metrics, preemption, train
from zoomin_jax.data import input_pipeline
from zoomin_jax.forward import abstract_variables, build

pytestmark = pytest.mark.slow  # end-to-end training runs and predict/export/mine on their checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def e2e_config(data_dir):
    c = tiny_config(str(data_dir))
    c.stage_order = ("mnet", "cnet")
    c.stages.mnet.steps, c.stages.cnet.steps = 4, 4
    c.checkpoint_every = 5
    return c


def final_params(workdir, c):
    ckpt = checkpoint.Checkpointer(str(workdir), async_save=False)
    step = ckpt.latest_step()
    abstract = abstract_variables(build(c), c)
    return step, jax.device_get(ckpt.restore(step, abstract)["model"])


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="module")
def uninterrupted(data_dir, tmp_path_factory):
    wd = tmp_path_factory.mktemp("run_a")
    results = train.train_and_evaluate(e2e_config(data_dir), str(wd))
    return wd, results


def test_run_writes_reports_metrics_and_predictions(uninterrupted):
    wd, results = uninterrupted
    assert set(results) == {"M-Net", "Zoom-in-Net"}
    for r in results.values():
        assert -1.0 <= r["kappa"] <= 1.0 and r["num_examples"] == 8
        assert r["lesion_recall"]["num_lesions"] > 0 and 0 <= r["lesion_recall"]["recall@4"] <= 1
    lines = [json.loads(x) for x in open(wd / "metrics.jsonl")]
    train_steps = [x["step"] for x in lines if x["kind"] == "train"]
    assert train_steps == sorted(train_steps) and train_steps[-1] == 8
    assert all(np.isfinite(x["loss"]) for x in lines if x["kind"] == "train")
    rows = open(wd / "predictions" / "cnet_step8_validation.csv").read().splitlines()
    assert len(rows) == 1 + 8 and rows[0].startswith("id,label,grade_mnet")
    assert json.load(open(wd / "config.json"))["model"]["image_size"] == 100
    text = open(wd / "ablation.txt").read()
    assert "Zoom-in-Net" in text and "Paired difference to M-Net, 95% bootstrap interval (2000 resamples of the 8 " \
        "photographs, seed 0" in text
    # Every head's figures can be recomputed from the predictions CSV alone (every head's probabilities are in it).
    run = ablation.Run(str(wd))
    for head, name in (("mnet", "M-Net"), ("zoom_in", "Zoom-in-Net")):
        assert metrics.quadratic_weighted_kappa(run.labels, run.probs[head].argmax(1), 5) == pytest.approx(
            results[name]["kappa"], abs=1e-9)
        referable = results[name]["referable_vs_non_referable"]["auc"]
        if referable is not None:
            assert metrics.roc_auc((run.labels >= 2).astype(int), run.probs[head][:, 2:].sum(1)) == pytest.approx(
                referable, abs=1e-9)


def test_preemptions_and_a_crash_then_resume_end_with_exactly_the_uninterrupted_run(uninterrupted, data_dir,
                                                                                     tmp_path, monkeypatch):
    """SIGTERM on stage mnet's last step, SIGTERM again during the evaluation the re-run owes, kill -9 mid-stage
    cnet, then the same command again: parameters, reports and metrics rows equal the uninterrupted run's."""
    wd_a, results_a = uninterrupted
    c = e2e_config(data_dir)
    real_step, real_eval = train.make_train_step, input_pipeline.eval_iterator

    def interrupting(at_step, action):
        def make(*args, **kwargs):
            step = real_step(*args, **kwargs)

            def wrapped(state, batch):
                if int(state.step) == at_step:
                    action()
                return step(state, batch)

            return wrapped

        return make

    def sigterm():
        os.kill(os.getpid(), signal.SIGTERM)

    def crash():  # like kill -9: no handler, no save
        raise KeyboardInterrupt("simulated crash")

    # 1. SIGTERM during step 4, the last of stage mnet: step 4 is saved, its evaluation is not run.
    monkeypatch.setattr(train, "make_train_step", interrupting(3, sigterm))
    with pytest.raises(preemption.Preempted, match=r"SIGTERM in stage mnet: step 4 is saved") as e:
        train.train_and_evaluate(c, str(tmp_path))
    assert e.value.saved_step == 4 == checkpoint.Checkpointer(str(tmp_path), async_save=False).latest_step()
    assert not (tmp_path / "eval_results.json").exists()
    # 2. The re-run owes stage mnet's evaluation; SIGTERM before its first batch: nothing new is written.
    monkeypatch.setattr(train, "make_train_step", real_step)
    monkeypatch.setattr(input_pipeline, "eval_iterator", lambda *a, **k: (sigterm(), real_eval(*a, **k))[1])
    with pytest.raises(preemption.Preempted, match=r"during the evaluation .*step 4 is saved.* stage mnet runs on"):
        train.train_and_evaluate(c, str(tmp_path))
    assert checkpoint.Checkpointer(str(tmp_path), async_save=False).all_steps() == [4]
    assert not (tmp_path / "eval_results.json").exists() and not (tmp_path / "predictions").exists()
    # 3. The re-run evaluates mnet at step 4, then crashes before step 7 (checkpoints at 4 and 5).
    monkeypatch.setattr(input_pipeline, "eval_iterator", real_eval)
    monkeypatch.setattr(train, "make_train_step", interrupting(6, crash))
    with pytest.raises(KeyboardInterrupt):
        train.train_and_evaluate(c, str(tmp_path))
    assert checkpoint.Checkpointer(str(tmp_path), async_save=False).latest_step() == 5
    # 4. The same command again resumes mid-stage at 5 and finishes.
    monkeypatch.setattr(train, "make_train_step", real_step)
    results_b = train.train_and_evaluate(c, str(tmp_path))

    step_a, params_a = final_params(wd_a, c)
    step_b, params_b = final_params(tmp_path, c)
    assert step_a == step_b == 8
    leaves_a, leaves_b = jax.tree_util.tree_leaves(params_a), jax.tree_util.tree_leaves(params_b)
    assert all(np.array_equal(a, b) for a, b in zip(leaves_a, leaves_b, strict=True))
    for head in ("M-Net", "Zoom-in-Net"):  # M-Net's from the evaluation the preempted runs owed
        assert results_b[head]["confusion_matrix"] == results_a[head]["confusion_matrix"]
        assert results_b[head]["kappa"] == results_a[head]["kappa"]
    rows_a, rows_b = ([(r["step"], r["kind"], r.get("loss")) for r in map(json.loads, open(w / "metrics.jsonl"))]
                      for w in (wd_a, tmp_path))
    assert rows_b == rows_a  # every step once, replayed rows replaced


def test_eval_mode_restores_in_a_new_process(uninterrupted, data_dir):
    wd, results = uninterrupted
    env = {**os.environ, "PYTHONPATH": ROOT, "XLA_FLAGS": os.environ["XLA_FLAGS"],
           "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-m", "zoomin_jax.main", "--config=tests/tiny.py", f"--workdir={wd}", "--mode=eval",
           f"--config.data.data_dir={data_dir}", "--config.stage_order=mnet,cnet", "--config.stages.mnet.steps=4",
           "--config.stages.cnet.steps=4"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.load(open(wd / "eval_step8_validation.json"))
    assert report["Zoom-in-Net"]["kappa"] == results["Zoom-in-Net"]["kappa"]
    assert report["Zoom-in-Net"]["confusion_matrix"] == results["Zoom-in-Net"]["confusion_matrix"]
    assert "Zoom-in-Net" in proc.stdout


def test_eval_without_checkpoint_says_what_to_do(tmp_path, data_dir):
    from zoomin_jax.evaluate import evaluate_checkpoint

    with pytest.raises(FileNotFoundError, match=r"No checkpoint in .*checkpoints.*--mode=train"):
        evaluate_checkpoint(e2e_config(data_dir), str(tmp_path))


def test_predict_on_a_folder_grades_each_photograph_as_the_eval_step_does_alone(uninterrupted, data_dir, tmp_path):
    """`--mode=predict` over a folder (nested, mixed formats, two damaged files, 10 photographs: two batches with
    padding): every row is the eval step's output for that photograph prepared alone, boxes mapped back to it."""
    from PIL import Image

    from zoomin_jax import eval_step, predict, restore, sharding

    wd, _ = uninterrupted
    c = e2e_config(data_dir)
    rng = np.random.default_rng(0)
    (tmp_path / "in" / "nested").mkdir(parents=True)
    names = []
    for i in range(10):
        h, w = int(rng.integers(300, 500)), int(rng.integers(500, 700))
        yy, xx = np.mgrid[:h, :w]
        disc = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 <= (0.45 * h) ** 2
        image = np.zeros((h, w, 3), np.uint8)
        image[disc] = rng.integers(60, 200, 3)
        spots = rng.random((h, w)) < 0.002  # dark dots: photographs the model grades differently
        image[disc & spots] = (40, 10, 10)
        name = f"{'nested/' if i % 3 == 0 else ''}photo{i}.{('jpg', 'png', 'tif')[i % 3]}"
        Image.fromarray(image).save(tmp_path / "in" / name)
        names.append(name)
    Image.fromarray(np.full((400, 600), 90, np.uint8)).save(tmp_path / "in" / "gray.png")
    jpeg = (tmp_path / "in" / "nested" / "photo0.jpg").read_bytes()
    (tmp_path / "in" / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    out = predict.predict_folder(c, str(wd), str(tmp_path / "in"), str(tmp_path / "out"))

    assert sorted(r["path"] for r in out["rows"]) == sorted(names)
    assert sorted((p, reason) for p, reason, _ in out["unreadable"]) == [("cut.jpg", "truncated"),
                                                                         ("gray.png", "grayscale")]
    model, mesh, variables, step = restore.restore_model(c, str(wd))
    assert out["step"] == step == 8
    eval_step = eval_step.make_eval_step(model, mesh, tuple(c.data.eval_tta))
    for r in out["rows"]:
        prep = predict.prepare(tmp_path / "in" / r["path"], c)
        images = np.zeros((8, 100, 100, 3), np.uint8)
        images[0] = prep.image
        alone = jax.device_get(eval_step(variables, *sharding.to_global((images, np.arange(8, dtype=np.int32)),
                                                                       mesh)))
        np.testing.assert_allclose(r["probabilities"], alone["probs"]["zoom_in"][0], rtol=1e-5, atol=1e-6)
        assert r["boxes_prepared"] == alone["boxes"][0].tolist()
        assert r["boxes"] == predict.photo_boxes(alone["boxes"][0], prep.transform, 100, prep.photo_hw).tolist()
    assert len({round(r["p_abnormal"], 6) for r in out["rows"]}) > 1  # the photographs are told apart
    from zoomin_jax import overlay

    for r in out["rows"]:  # a picture per photograph: clean and heated panels with the bar, the patches, the levels
        with Image.open(tmp_path / "out" / r["picture"]) as im:
            assert r["picture"] == f"pictures/{r['path']}.jpg" and im.size[0] == 2 * overlay.PANEL + overlay.BAR
    # One decision per photograph, from the run's operating point at this step, and the rule in the JSON.
    saved = json.load(open(tmp_path / "out" / "predictions.json"))
    op = saved["referral"]
    assert op["step"] == 8 and op["fitted_on"] == "validation" and op["target_sensitivity"] == 0.9
    assert [r["refer"] for r in out["rows"]] == [r["p_referable"] >= op["threshold"] for r in out["rows"]]
    csv_rows = open(tmp_path / "out" / "predictions.csv").read().splitlines()
    assert len(csv_rows) == 11 and csv_rows[0].startswith("path,photo_height,photo_width,grade,p0")
    assert len(open(tmp_path / "out" / "unreadable.csv").read().splitlines()) == 3


@pytest.mark.parametrize("layout", ["eyepacs", "idrid", "messidor"])
def test_predict_gives_each_photograph_the_evaluations_prediction_in_every_dataset_layout(uninterrupted, data_dir,
                                                                                        tmp_path, layout):
    """One preparation (data/photo.py) for the builders and predict: a download in each dataset's layout is prepared
    and evaluated, and its photograph files are graded by predict; with Graham and the per-image field of view on
    (the field of view, taken before Graham, moves the boxes), every photograph gets the same probabilities (all
    heads) and boxes. Photographs cut at top and bottom, so the field of view has black bands Graham greys."""
    import fixtures_real as fx

    from zoomin_jax import evaluate, predict, restore

    wd, _ = uninterrupted
    c = e2e_config(data_dir)
    manual = tmp_path / "manual"
    c.data.name, c.data.manual_dir, c.data.data_dir = layout, str(manual), str(tmp_path / "tfds")
    c.data.graham, c.model.regions.fov = True, True
    if layout == "eyepacs":
        fx.make_eyepacs_patients(manual, patients=4, one_eyed=(2,))
        c.data.eval_split, photos = "train", manual / "train"
    elif layout == "idrid":
        fx.make_idrid_graded(manual)
        c.data.eval_split, photos = "train", manual / fx.IDRID_GRADED / "1. Original Images" / "a. Training Set"
    else:
        fx.make_messidor(manual, sheet="csv", hw=(300, 420))
        c.data.eval_split, photos = "test", manual
    model, mesh, variables, _ = restore.restore_model(c, str(wd))
    evaluated = evaluate.infer_split(model, variables, c, mesh, c.data.eval_split)
    out = predict.predict_folder(c, str(wd), str(photos), str(tmp_path / "out"), pictures=False)
    by_id = {Path(r["path"]).stem: r for r in out["rows"]}
    assert set(evaluated["id"]) <= set(by_id) and len(evaluated["id"]) >= 4
    from zoomin_jax.data import datasets, fov, input_pipeline

    source = datasets.open_split(c, c.data.eval_split)
    for i, image_id in enumerate(evaluated["id"]):
        r = by_id[image_id]
        for head in ("mnet", "mnet_anet", "zoom_in"):
            np.testing.assert_allclose(r["heads"][head], evaluated["probs"][head][i], atol=2e-6)
        assert r["boxes_prepared"] == evaluated["boxes"][i].tolist(), image_id
        # The field of view taken after Graham (what EyePACS and Messidor evaluation used before) is another one:
        # Graham greys the black bands, so the rule matters for these photographs.
        stored = input_pipeline.decode_jpeg(source[int(evaluated["index"][i])]["image"])
        assert not np.array_equal(fov.field_of_view(stored, graham=True), evaluated["fov_rows"][i]), image_id


def test_the_exported_artefact_with_test_time_variants_gives_predicts_probabilities(uninterrupted, data_dir,
                                                                                    tmp_path):
    """`--mode=export` with two test-time variants: the artefact (loaded with jax alone) on predict's prepared
    images gives predict's probabilities and boxes, and its metadata names the step, the preparation, the variants
    and the thresholds with where they were fitted."""
    from PIL import Image

    from zoomin_jax import export, predict

    wd, _ = uninterrupted
    c = e2e_config(data_dir)
    c.data.eval_tta = ("identity", "flip_lr")
    rng = np.random.default_rng(5)
    (tmp_path / "in").mkdir()
    for i in range(3):
        image = np.zeros((300, 400, 3), np.uint8)
        yy, xx = np.mgrid[:300, :400]
        image[(yy - 150) ** 2 + (xx - 200) ** 2 <= 140**2] = rng.integers(60, 200, 3)
        image[rng.random((300, 400)) < 0.003] = (30, 5, 5)
        Image.fromarray(image).save(tmp_path / "in" / f"p{i}.png")
    out = predict.predict_folder(c, str(wd), str(tmp_path / "in"), str(tmp_path / "out"), pictures=False)
    path = export.export_checkpoint(c, str(wd), str(tmp_path / "model.jaxexport"))
    artefact = jax.export.deserialize(bytearray(path.read_bytes()))
    images = np.stack([predict.prepare(tmp_path / "in" / r["path"], c).image for r in out["rows"]])
    got = artefact.call(images)
    np.testing.assert_allclose(np.asarray(got["probabilities"]), [r["probabilities"] for r in out["rows"]],
                               atol=2e-6)
    np.testing.assert_allclose(np.asarray(got["probabilities_mnet"]), [r["heads"]["mnet"] for r in out["rows"]],
                               atol=2e-6)
    assert np.asarray(got["boxes"]).tolist() == [r["boxes_prepared"] for r in out["rows"]]
    meta = json.loads((tmp_path / "model.jaxexport.json").read_text())
    assert meta["step"] == 8 and meta["test_time_variants"] == ["identity", "flip_lr"]
    assert meta["input"]["image_size"] == 100 and meta["input"]["graham"] is False
    assert meta["thresholds"]["fitted_on"] == "validation" and meta["thresholds"]["step"] == 8
    assert len(meta["thresholds"]["values"]) == 4


def test_predict_keeps_what_is_done_when_killed_and_the_same_command_continues(uninterrupted, data_dir, tmp_path,
                                                                                monkeypatch):
    """Killed after its first batch (and a line cut mid-write), predict keeps the 8 graded rows; the same call again
    grades only the rest and ends with the rows of an uninterrupted run. A memory error on one photograph becomes
    its row of unreadable.csv; a folder of another checkpoint step is refused."""
    import csv

    from PIL import Image

    from zoomin_jax import predict, predict_log

    wd, _ = uninterrupted
    c = e2e_config(data_dir)
    rng = np.random.default_rng(9)
    (tmp_path / "in").mkdir()
    for i in range(13):
        image = np.zeros((300, 420, 3), np.uint8)
        yy, xx = np.mgrid[:300, :420]
        image[(yy - 150) ** 2 + (xx - 210) ** 2 <= 140**2] = rng.integers(60, 200, 3)
        Image.fromarray(image).save(tmp_path / "in" / f"p{i:02d}.png")
    real_prepare, real_grade = predict.prepare, predict._grade

    def prepare(path, config):
        if path.name == "p05.png":
            raise MemoryError("cannot allocate 9.1 GiB for a 60000 x 50000 TIFF")
        return real_prepare(path, config)

    monkeypatch.setattr(predict, "prepare", prepare)
    whole = predict.predict_folder(c, str(wd), str(tmp_path / "in"), str(tmp_path / "whole"), pictures=False)
    graded = []

    def crash_after_one_batch(items, *args, **kwargs):
        if graded:
            raise KeyboardInterrupt("killed")
        graded.append(len(items))
        return real_grade(items, *args, **kwargs)

    monkeypatch.setattr(predict, "_grade", crash_after_one_batch)
    with pytest.raises(KeyboardInterrupt):
        predict.predict_folder(c, str(wd), str(tmp_path / "in"), str(tmp_path / "out"), pictures=False)
    out = tmp_path / "out"
    kept = list(csv.DictReader(open(out / "predictions.csv")))
    assert [r["path"] for r in kept] == [f"p{i:02d}.png" for i in (0, 1, 2, 3, 4, 6, 7, 8)]  # the first batch
    assert list(csv.DictReader(open(out / "unreadable.csv")))[0]["reason"] == "error"
    with open(out / "predictions.jsonl", "a") as f:
        f.write('{"item": "p09.png", "path": "p09.pn')  # a line cut by the kill
    graded.clear()
    monkeypatch.setattr(predict, "_grade", lambda items, *a, **k: (graded.append(len(items)), real_grade(items, *a,
                                                                                                         **k))[1])
    again = predict.predict_folder(c, str(wd), str(tmp_path / "in"), str(out), pictures=False)
    assert graded == [4]  # only the photographs not done before
    key = lambda rows: sorted((r["path"], tuple(np.round(r["probabilities"], 6)), str(r["boxes"])) for r in rows)  # noqa: E731
    assert key(again["rows"]) == key(whole["rows"]) and len(again["rows"]) == 12
    assert again["unreadable"] == whole["unreadable"] == [
        ("p05.png", "error", "MemoryError: cannot allocate 9.1 GiB for a 60000 x 50000 TIFF")]
    assert len(list(csv.DictReader(open(out / "predictions.csv")))) == 12
    assert len(json.load(open(out / "predictions.json"))["photographs"]) == 12
    (out / predict_log.STATE).write_text(json.dumps({"step": 5, "workdir": "elsewhere"}))
    with pytest.raises(predict_log.OtherStep, match=r"holds predictions of checkpoint step 5 .* uses step 8\. "
                                                     r"Pass --step=5"):
        predict.predict_folder(c, str(wd), str(tmp_path / "in"), str(out), pictures=False)


def test_predict_on_a_prepared_split_gives_the_runs_own_evaluation_rows(uninterrupted, data_dir, tmp_path):
    """`--mode=predict --split=validation`: row for row (joined by id) the run's evaluation CSV of that split, with
    the records' true grades, boxes in the stored image's pixels, and the true grade on the report."""
    import csv

    from zoomin_jax import predict

    wd, _ = uninterrupted
    out = predict.predict_split(e2e_config(data_dir), str(wd), str(tmp_path / "out"), split="validation")
    evaluated = {r["id"]: r for r in csv.DictReader(open(wd / "predictions" / "cnet_step8_validation.csv"))}
    assert sorted(r["path"] for r in out["rows"]) == sorted(evaluated) and not out["unreadable"]
    for r in out["rows"]:
        e = evaluated[r["path"]]
        assert r["label"] == int(e["label"]) and r["grade"] == int(e["grade_zoom_in"])
        np.testing.assert_allclose(r["probabilities"], [float(e[f"p{k}"]) for k in range(5)], atol=1e-5)
        assert r["boxes"] == r["boxes_prepared"] == [[int(e[f"box{j}_{x}"]) for x in ("y0", "x0", "y1", "x1")]
                                                     for j in range(2)]
        assert (r["photo_height"], r["photo_width"]) == (100, 100) and (tmp_path / "out" / r["picture"]).exists()
    header = open(tmp_path / "out" / "predictions.csv").readline()
    assert header.startswith("path,photo_height,photo_width,label,grade,p0")
    assert (tmp_path / "out" / "report.html").read_text().count("true grade") == 8
    # The run's thresholds were fitted on this very split at this step: every grade from them says so.
    assert {r["thresholds"] for r in out["rows"]} == {"fitted on validation at step 8 (in-sample)"}
    assert {r["thresholds"] for r in csv.DictReader(open(tmp_path / "out" / "predictions.csv"))} == {
        "fitted on validation at step 8 (in-sample)"}
    assert (tmp_path / "out" / "report.html").read_text().count("(in-sample)") == 8


def test_thresholds_are_applied_only_at_the_step_they_were_fitted_and_in_sample_is_flagged(tmp_path):
    """eval_results.json names each head's step: thresholds of another checkpoint are not applied; a kappa from
    thresholds fitted on the split it is reported on carries a * in the table."""
    from zoomin_jax import evaluate, metrics

    reports = {"M-Net": {"step": 4, "thresholds": [0.5, 1.5, 2.5, 3.5], "thresholds_fitted_on": "validation"},
               "Zoom-in-Net": {"step": 8, "thresholds": [0.4, 1.4, 2.4, 3.4], "thresholds_fitted_on": "validation"}}
    (tmp_path / "eval_results.json").write_text(json.dumps(reports))
    assert evaluate.saved_thresholds(str(tmp_path), 8) == {
        "zoom_in": {"values": [0.4, 1.4, 2.4, 3.4], "split": "validation", "step": 8}}
    assert evaluate.saved_thresholds(str(tmp_path), 5) == {}
    labels = np.array([0, 1, 2, 3, 4, 0, 2, 1])
    probs = np.eye(5)[[0, 1, 2, 3, 4, 1, 2, 0]] * 0.9 + 0.02
    inside = {**metrics.grading_report(labels, probs, [0.5, 1.5, 2.5, 3.5]), "thresholds_in_sample": True}
    apart = {**metrics.grading_report(labels, probs, [0.5, 1.5, 2.5, 3.5]), "thresholds_in_sample": False}
    table = metrics.format_ablation_table({"M-Net": apart, "Zoom-in-Net": inside}).splitlines()
    assert table[2].split()[2] == f"{apart['kappa_thresholded']:.3f}"
    assert table[3].split()[2] == f"{inside['kappa_thresholded']:.3f}*"
    assert table[-1] == "* thresholds fitted on these same photographs (in-sample: optimistic)"


def test_mine_clusters_each_patch_by_its_own_photographs_feature(uninterrupted, data_dir, tmp_path, capsys):
    """`--mode=mine` on the validation split (8 photographs x 2 patches, 3 clusters): each patch's feature is C-Net's
    for that photograph run alone (batch reversed: rows joined by index, not position), the clustering is a fixed
    point of k-means, the written purities are those counted from clusters.csv, the mosaics show the nearest
    patches cut from the stored images."""
    import collections
    import csv

    from PIL import Image

    from zoomin_jax import eval_step, mine, restore, sharding
    from zoomin_jax.data import datasets

    wd, _ = uninterrupted
    c = e2e_config(data_dir)
    c.mine.clusters, c.mine.mosaic_patches, c.mine.mosaic_px = 3, 4, 32
    out = mine.mine_split(c, str(wd), str(tmp_path / "mined"))
    printed = capsys.readouterr().out

    source = datasets.open_split(c, "validation")
    images = np.stack([input_pipeline.decode_jpeg(source[i]["image"]) for i in range(8)])
    model, mesh, variables, _ = restore.restore_model(c, str(wd))
    step = eval_step.make_eval_step(model, mesh, ("identity",), features=True)  # compiled already: the cache has it
    alone = jax.device_get(step(variables, *sharding.to_global((images[::-1], np.arange(8, dtype=np.int32)), mesh)))
    feats = alone["patch_features"][::-1].reshape(16, -1)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    assert out["index"].tolist() == list(range(8))
    np.testing.assert_allclose(out["features"], feats, atol=2e-5)
    np.testing.assert_array_equal(out["boxes"], alone["boxes"][::-1])
    a = out["assignment"]
    centres = np.stack([feats[a == k].mean(0) for k in range(3)])  # every cluster has members
    assert (((feats[:, None] - centres[None]) ** 2).sum(-1).argmin(1) == a).all()

    rows = list(csv.DictReader(open(tmp_path / "mined" / "clusters.csv")))
    assert len(rows) == 16 and [int(r["cluster"]) for r in rows] == a.tolist()
    by_cluster = collections.defaultdict(collections.Counter)
    for r in rows:
        by_cluster[int(r["cluster"])][r["kind"]] += 1
    counted = sum(max(v.values()) for v in by_cluster.values()) / 16
    saved = json.load(open(tmp_path / "mined" / "mining.json"))
    assert saved["purity"] == pytest.approx(counted) and saved["patches"] == 16
    assert saved["purity"] >= saved["purity_one_cluster"]  # sum of the clusters' maxima >= the maximum of sums
    on_objects = [r for r in rows if r["kind"] != "background"]
    if on_objects:
        by_cluster = collections.defaultdict(collections.Counter)
        for r in on_objects:
            by_cluster[int(r["cluster"])][r["kind"]] += 1
        assert saved["objects"]["purity"] == pytest.approx(
            sum(max(v.values()) for v in by_cluster.values()) / len(on_objects))
    assert f"[mine] purity {counted:.3f}" in printed
    for k in range(3):  # the first tile of each mosaic: the cluster's patch nearest its centre (CSV: 5 decimals)
        members = [r for r in rows if int(r["cluster"]) == k]
        least = min(float(r["distance"]) for r in members)
        tiles = []
        for r in members:
            if float(r["distance"]) <= least + 1e-5:
                y0, x0, y1, x1 = (int(r[x]) for x in ("y0", "x0", "y1", "x1"))
                patch = Image.fromarray(images[int(r["index"])][y0:y1, x0:x1])
                tiles.append(np.asarray(patch.resize((32, 32), Image.LANCZOS)))
        mosaic = np.asarray(Image.open(tmp_path / "mined" / "mosaics" / f"cluster_{k:02d}.png"))
        assert mosaic.shape == (16 + 32, 360, 3)
        assert any(np.array_equal(mosaic[16:, :32], t) for t in tiles), k


IDRID_PHOTOS = Path(ROOT).parent / "shared" / "data" / "idrid" / "B. Disease Grading" / "1. Original Images"


@pytest.mark.skipif(not IDRID_PHOTOS.is_dir(), reason=f"real IDRiD photographs not found at {IDRID_PHOTOS}")
def test_predict_on_real_idrid_photographs_at_their_size_renders_in_a_browser(uninterrupted, data_dir, tmp_path):
    """Three real IDRiD photographs (2144x1424 JPEG, as shared) linked into a folder: each gets a row with boxes
    inside its own pixels and a picture, and headless Chromium shows the report with every picture loaded and no
    script error."""
    import re

    from test_report import CHROMIUM, _chromium

    from zoomin_jax import predict

    wd, _ = uninterrupted
    photos = sorted(IDRID_PHOTOS.rglob("IDRiD_0[0-3][0-9].jpg"))[:3]
    (tmp_path / "in").mkdir()
    for p in photos:
        (tmp_path / "in" / p.name).symlink_to(p)
    out = predict.predict_folder(e2e_config(data_dir), str(wd), str(tmp_path / "in"), str(tmp_path / "out"))
    assert [r["path"] for r in out["rows"]] == [p.name for p in photos] and not out["unreadable"]
    for r in out["rows"]:
        h, w = r["photo_height"], r["photo_width"]
        assert (h, w) == (1424, 2144)
        for y0, x0, y1, x1 in r["boxes"]:  # 75 of 100 stored pixels: about 3/4 of the disc's height, in the photo
            assert 0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w and 0.5 * h < y1 - y0 < h
    saved = json.load(open(tmp_path / "out" / "predictions.json"))
    assert [r["boxes"] for r in saved["photographs"]] == [r["boxes"] for r in out["rows"]]
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (.ci/run installs Debian's package)")
    dump = _chromium((tmp_path / "out" / "report.html").as_uri(), "--dump-dom", tmp=tmp_path)
    assert "Uncaught" not in dump.stderr and not re.search(r"CONSOLE.*[Ee]rror", dump.stderr), dump.stderr[-2000:]
    assert 'data-images-ok="3/3"' in dump.stdout
