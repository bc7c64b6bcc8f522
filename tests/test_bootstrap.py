"""Paired bootstrap intervals (`bootstrap.py`) and the ablation read back from a run's files (`ablation.py`).

Oracles that do not share the code: identical heads must give exactly [0, 0]; an AUC difference counted pair by
pair by hand; the interval of an AUC difference against DeLong's (1988) paired normal interval, computed here from
its placement values; patients resampled together must give exactly the photographs' bootstrap when each patient's
two photographs are the same photograph twice (kappa and AUC do not change when every row is doubled).
"""

import csv
import json

import numpy as np
import pytest
from scipy import stats

from zoomin_jax import ablation, bootstrap
from zoomin_jax.predictions_csv import prob_columns


def _probs_from_scores(referable_score: np.ndarray) -> np.ndarray:
    """Five-grade probabilities whose P(grade >= 2) is the given score (and P(grade 0) = 1 - score)."""
    s = np.asarray(referable_score, float)
    return np.stack([1 - s, np.zeros_like(s), s, np.zeros_like(s), np.zeros_like(s)], 1)


def test_identical_heads_give_exactly_zero():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, 120)
    p = rng.dirichlet(np.ones(5), 120)
    out = bootstrap.compare([y], [{"mnet": p, "zoom_in": p.copy()}], list(range(120)), "mnet", ["zoom_in"], n=300)
    for fig in bootstrap.FIGURES:
        c = out["zoom_in"][fig]
        assert (c["difference"], c["low"], c["high"]) == (0.0, 0.0, 0.0) and c["used"] == 300


def test_an_auc_difference_counted_by_hand():
    """Referable: grades 2, 2, 3, 4 positive; 0, 0, 1, 1 negative. Head A separates them (AUC 1). Head B's scores
    0.9, 0.6, 0.4, 0.2 (positives) and 0.5, 0.3, 0.1, 0.05 (negatives): of the 16 positive-negative pairs the
    positive wins 4 (0.9) + 4 (0.6) + 3 (0.4) + 2 (0.2) = 13, AUC 13/16; the difference is 3/16."""
    y = np.array([2, 2, 3, 4, 0, 0, 1, 1])
    a = _probs_from_scores([0.95, 0.9, 0.85, 0.8, 0.3, 0.2, 0.1, 0.05])
    b = _probs_from_scores([0.9, 0.6, 0.4, 0.2, 0.5, 0.3, 0.1, 0.05])
    out = bootstrap.compare([y], [{"m": b, "z": a}], list(range(8)), "m", ["z"], n=200)
    assert out["z"]["AUC referable"]["difference"] == pytest.approx(1 - 13 / 16, abs=1e-12)
    assert out["z"]["AUC referable"]["low"] <= 3 / 16 <= out["z"]["AUC referable"]["high"]
    assert out["z"]["AUC referable"]["low"] >= 0.0  # A never does worse than B on any resample


def _delong_paired(y: np.ndarray, s1: np.ndarray, s2: np.ndarray) -> tuple[float, float]:
    """AUC1 - AUC2 and its standard error by DeLong et al. (1988), from the placement values."""
    pos, neg = y == 1, y == 0

    def placements(s):
        sp, sn = s[pos], s[neg]
        cmp = (sp[:, None] > sn[None, :]) + 0.5 * (sp[:, None] == sn[None, :])
        return cmp.mean(1), cmp.mean(0), cmp.mean()  # V10 per positive, V01 per negative, AUC

    v10a, v01a, auc_a = placements(s1)
    v10b, v01b, auc_b = placements(s2)
    s10 = np.cov(np.stack([v10a, v10b]))
    s01 = np.cov(np.stack([v01a, v01b]))
    var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / pos.sum() + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / neg.sum()
    return auc_a - auc_b, float(np.sqrt(var))


def test_the_interval_of_an_auc_difference_agrees_with_delong():
    rng = np.random.default_rng(7)
    n = 400
    y = rng.choice(5, n, p=[0.5, 0.1, 0.25, 0.1, 0.05])
    signal = (y >= 2) + rng.normal(0, 0.9, n)
    s1 = 1 / (1 + np.exp(-(signal + rng.normal(0, 0.5, n))))  # two correlated heads, the first a little sharper
    s2 = 1 / (1 + np.exp(-(0.8 * signal + rng.normal(0, 0.7, n))))
    out = bootstrap.compare([y], [{"m": _probs_from_scores(s2), "z": _probs_from_scores(s1)}], list(range(n)), "m",
                            ["z"], n=2000)["z"]["AUC referable"]
    diff, se = _delong_paired((y >= 2).astype(int), s1, s2)
    z = stats.norm.ppf(0.975)
    assert out["difference"] == pytest.approx(diff, abs=1e-12)
    assert out["low"] == pytest.approx(diff - z * se, abs=0.006) and out["high"] == pytest.approx(diff + z * se,
                                                                                                   abs=0.006)


def test_patients_drawn_together_equal_photographs_when_each_patient_is_one_photograph_twice():
    rng = np.random.default_rng(3)
    g = 90
    y = rng.integers(0, 5, g)
    pm, pz = rng.dirichlet(np.ones(5), g), rng.dirichlet(np.ones(5), g)
    single = bootstrap.compare([y], [{"m": pm, "z": pz}], list(range(g)), "m", ["z"], n=400, seed=5)
    twice = bootstrap.compare([np.repeat(y, 2)], [{"m": np.repeat(pm, 2, 0), "z": np.repeat(pz, 2, 0)}],
                              list(np.repeat(np.arange(g), 2)), "m", ["z"], n=400, seed=5)
    assert twice["groups"] == single["groups"] == g and twice["rows"] == 2 * g
    for fig in bootstrap.FIGURES:
        for key in ("difference", "low", "high"):
            assert twice["z"][fig][key] == pytest.approx(single["z"][fig][key], abs=1e-12), (fig, key)
    # ... while resampling the photographs apart would narrow it (it believes there are twice the patients).
    apart = bootstrap.compare([np.repeat(y, 2)], [{"m": np.repeat(pm, 2, 0), "z": np.repeat(pz, 2, 0)}],
                              list(range(2 * g)), "m", ["z"], n=400, seed=5)
    width = lambda r: r["z"]["kappa"]["high"] - r["z"]["kappa"]["low"]  # noqa: E731
    assert width(apart) < 0.85 * width(twice)


def test_each_resample_keeps_a_patients_rows_together_and_a_rerun_repeats_it():
    groups = ["a", "a", "b", "c", "c", "d"]
    for rows in bootstrap.resamples(groups, n=50, seed=2):
        counts = np.bincount(rows, minlength=6)
        assert counts[0] == counts[1] and counts[3] == counts[4] and counts.sum() == len(rows)
    assert all(np.array_equal(a, b) for a, b in zip(bootstrap.resamples(groups, 50, 2),
                                                    bootstrap.resamples(groups, 50, 2), strict=True))


def _fake_run(folder, y, probs, patients=None):
    """A finished run's files as training writes them: eval_results.json and one predictions CSV (with the
    both-eyes head's columns when `probs` has "pair")."""
    (folder / "predictions").mkdir(parents=True)
    heads = {"mnet": "M-Net", "mnet_anet": "M-Net + A-Net", "zoom_in": "Zoom-in-Net", "pair": "Both eyes"}
    order = [h for h in ("zoom_in", "mnet", "mnet_anet", "pair") if h in probs]
    reports = {heads[h]: {"split": "train[80%:]", "step": 30, "kappa": 0.0} for h in order}
    (folder / "eval_results.json").write_text(json.dumps(reports))
    with open(folder / "predictions" / "joint_step30_train[80%:].csv", "w", newline="") as f:
        w = csv.writer(f)
        cols = [c for h in order for c in prob_columns(h)]
        w.writerow(["id", "label"] + (["patient"] if patients is not None else []) + cols)
        for i in range(len(y)):
            w.writerow([f"{i}_x", y[i]] + ([patients[i]] if patients is not None else [])
                       + [f"{v:.5f}" for h in order for v in probs[h][i]])


def test_several_identical_runs_pool_to_the_single_runs_interval(tmp_path):
    rng = np.random.default_rng(4)
    y = rng.integers(0, 5, 60)
    probs = {h: np.round(rng.dirichlet(np.ones(5), 60), 5) for h in ("mnet", "mnet_anet", "zoom_in")}
    patients = np.repeat(np.arange(30), 2)
    for k in range(3):
        _fake_run(tmp_path / f"s{k}", y, probs, patients)
    runs = [ablation.Run(str(tmp_path / f"s{k}")) for k in range(3)]
    assert runs[0].has_patients and bootstrap.group_rows(runs[0].groups)[0].size == 2
    one, pooled = ablation.compare(runs[:1], n=300), ablation.compare(runs, n=300)
    assert pooled["groups"] == 30 and pooled["runs"] == 3
    for head in ("mnet_anet", "zoom_in"):
        for fig in bootstrap.FIGURES:
            for key in ("difference", "low", "high"):
                assert pooled[head][fig][key] == pytest.approx(one[head][fig][key], abs=1e-12)
    text = ablation.report([str(tmp_path / f"s{k}") for k in range(3)], n=300)
    assert "3 runs on 'train[80%:]' (60 photographs)" in text and "300 resamples of the 30 patients, seed 0" in text
    # The figures are recomputed from the CSV: M-Net's kappa is the file's own.
    kappa = bootstrap.FIGURES["kappa"](y, probs["mnet"])
    assert f"{kappa:.3f} +- 0.000 ({kappa:.3f} .. {kappa:.3f})" in text


def test_a_lever_is_the_difference_of_the_sets_means_by_scikit_learn(tmp_path):
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(7)
    y = rng.integers(0, 5, 80)
    heads = ("mnet", "mnet_anet", "zoom_in")
    sets = {}
    for name, shift in (("pt", 1.5), ("plain", 0.0)):  # the lever pushes the true grade's probability up
        sets[name] = []
        for k in range(2):
            probs = {}
            for h in heads:
                logits = rng.normal(size=(80, 5))
                logits[np.arange(80), y] += shift
                p = np.exp(logits)
                probs[h] = np.round(p / p.sum(1, keepdims=True), 5)
            _fake_run(tmp_path / f"{name}{k}", y, probs)
            sets[name].append(probs)
    pt = [ablation.Run(str(tmp_path / f"pt{k}")) for k in range(2)]
    plain = [ablation.Run(str(tmp_path / f"plain{k}")) for k in range(2)]
    result = ablation.compare_sets(pt, plain, n=200)
    referable = (y >= 2).astype(int)
    for h in heads:
        auc = {s: np.mean([roc_auc_score(referable, p[h][:, 2:].sum(1)) for p in sets[s]]) for s in sets}
        got = result[h]["AUC referable"]
        assert got["difference"] == pytest.approx(auc["pt"] - auc["plain"], abs=1e-4)  # CSV rounding only
        assert got["low"] <= got["difference"] <= got["high"] and got["low"] > 0  # a lever this strong is seen
    same = ablation.compare_sets(plain, plain, n=200)
    assert all(c["low"] == c["high"] == c["difference"] == 0 for h in heads for c in same[h].values())
    with pytest.raises(ValueError, match="as many runs"):
        ablation.compare_sets(pt, plain[:1], n=10)
    text = ablation.report([str(tmp_path / "pt0"), str(tmp_path / "pt1")], n=200,
                           against=[str(tmp_path / "plain0"), str(tmp_path / "plain1")])
    assert "Each head minus the same head in " in text and "mean over 2 pairs of runs resampled together" in text
    assert text.count("2 runs on 'train[80%:]' (80 photographs)") == 2


def test_the_both_eyes_head_is_also_compared_with_zoom_in_net(tmp_path):
    """A run with the pair head prints, beside the table against M-Net, Both eyes minus Zoom-in-Net; the difference
    is scikit-learn's AUC of one head minus the other's on the same photographs."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(11)
    y = rng.integers(0, 5, 40)
    probs = {h: np.round(rng.dirichlet(np.ones(5), 40), 5) for h in ("mnet", "mnet_anet", "zoom_in", "pair")}
    _fake_run(tmp_path / "r", y, probs, np.repeat(np.arange(20), 2))
    run = ablation.Run(str(tmp_path / "r"))
    result = ablation.compare([run], n=200, reference="zoom_in", heads=["pair"])
    referable = (y >= 2).astype(int)
    want = roc_auc_score(referable, probs["pair"][:, 2:].sum(1)) - roc_auc_score(referable,
                                                                                probs["zoom_in"][:, 2:].sum(1))
    assert result["pair"]["AUC referable"]["difference"] == pytest.approx(want, abs=1e-4)  # CSV rounding only
    assert set(result) >= {"pair"} and "mnet_anet" not in result
    text = ablation.report([str(tmp_path / "r")], n=200)
    assert "Paired difference to M-Net" in text and "Paired difference to Zoom-in-Net" in text
    tail = text.split("Paired difference to Zoom-in-Net")[1]
    assert "Both eyes" in tail and "M-Net + A-Net" not in tail
