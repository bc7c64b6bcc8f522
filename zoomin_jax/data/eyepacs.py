"""TFDS builder for the Kaggle "Diabetic Retinopathy Detection" (EyePACS) download, read in its own layout.

Splits follow the paper: `train` (trainLabels.csv, 35,126 photos), `validation` (the test photos whose
retinopathy_solution.csv row says Usage=Public, 10,906: Kaggle's public leaderboard) and `test` (Usage=Private,
42,670: the private leaderboard). Photo names are `<patient>_<left|right>`; `patient_id` and `eye` keep the pairing.

Skipped and counted (see `skips.SkipCounter`): unusable photos (`preprocess.BadPhoto` reasons), label rows whose
photo is missing ("missing_image"), photos without a label row ("no_label"; test photos without a solution row are
counted in `test`), levels outside 0-4 or not integers ("bad_label"), names that are not `<int>_<left|right>`
("bad_name"), solution rows whose Usage is neither Public nor Private ("unknown_usage"), and rows repeated for
one image ("conflicting_rows" when they disagree: the image is skipped; when they agree the image is kept and the
extra rows are reported apart, as merged duplicates). Each image is counted once, under the first reason found.
Anything else in the folder (sample.zip, sample/, .DS_Store) is ignored.
"""

from __future__ import annotations

import csv
import functools
import io
import re
import zipfile
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from zoomin_jax.data import real_builder, skips

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download the Kaggle competition "Diabetic Retinopathy Detection" (EyePACS) data and extract it into one folder:
  <manual_dir>/train/*.jpeg            (extract train.zip.001 ... train.zip.005 together)
  <manual_dir>/trainLabels.csv         (columns image,level; trainLabels.csv.zip is read as is)
  <manual_dir>/test/*.jpeg             (optional: test.zip.001 ... test.zip.007; gives validation and test)
  <manual_dir>/retinopathy_solution.csv (optional, published after the competition: image,level,Usage)
Then: python -m zoomin_jax.data.eyepacs --manual_dir=<manual_dir> --data_dir=<tfds dir> --image_size=400
"""

_PHOTO_EXTS = (".jpeg", ".jpg")
_NAME = re.compile(r"^(\d+)_(left|right)$")


def _read_csv(root: Path, name: str) -> list[dict[str, str]] | None:
    """Rows of `name` (or of `name`.zip) in root, keys stripped; None if neither exists."""
    path = root / name
    if path.exists():
        text = path.read_text(encoding="utf-8-sig")
    elif (root / f"{name}.zip").exists():
        with zipfile.ZipFile(root / f"{name}.zip") as z:
            member = next(m for m in z.namelist() if m.endswith(name))
            text = z.read(member).decode("utf-8-sig")
    else:
        return None
    rows = csv.DictReader(io.StringIO(text))
    return [{(k or "").strip().lower(): (v or "").strip() for k, v in row.items()} for row in rows]


def _photos(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in _PHOTO_EXTS and p.is_file()}


def _example(task, config: real_builder.RealConfig) -> dict:
    name, path, level, patient, eye = task
    fields = {"id": name, "label": level, "patient_id": patient, "eye": eye}
    return real_builder.photo_example(path, config, fields)


class Eyepacs(real_builder.RealBuilder):
    """Kaggle EyePACS diabetic-retinopathy photographs, grades 0-4, from the user's download."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "First release.",
                     "1.1.0": "fov_rows stored, taken before Graham as for IDRiD and predict (data/photo.py)."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    _MANUAL_WHAT = "the Kaggle download: train/, trainLabels.csv, optionally test/ and retinopathy_solution.csv"
    _DESCRIPTION = "EyePACS fundus photographs graded 0-4 (Kaggle Diabetic Retinopathy Detection, 2015)."
    _HOMEPAGE = "https://www.kaggle.com/c/diabetic-retinopathy-detection"
    _CITATION = "Kaggle, Diabetic Retinopathy Detection (EyePACS), 2015."

    def _extra_features(self) -> dict:
        return {
            "patient_id": tfds.features.Scalar(dtype=np.int64),
            "eye": tfds.features.ClassLabel(names=["left", "right"]),
        }

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = Path(dl_manager.manual_dir)
        how = "How to get it:\n" + MANUAL_DOWNLOAD_INSTRUCTIONS
        real_builder.require(root, "the folder with the extracted Kaggle download", "eyepacs", how)
        train_dir = real_builder.require(root / "train", "the folder of training photos train/*.jpeg", "eyepacs", how)
        train_rows = _read_csv(root, "trainLabels.csv")
        if train_rows is None:
            real_builder.require(root / "trainLabels.csv", "the training labels (image,level)", "eyepacs", how)
        fn = functools.partial(_example, config=self.builder_config)

        counters = {s: skips.SkipCounter(s) for s in ("train", "validation", "test")}
        photos = _photos(train_dir)
        train_labels = real_builder.unique_rows(train_rows, "image", counters["train"])
        tasks = {"train": self._tasks(photos, train_labels, counters["train"])}

        test_dir, sol_rows = root / "test", _read_csv(root, "retinopathy_solution.csv")
        if not test_dir.is_dir() or sol_rows is None:
            logging.warning(
                "eyepacs: %s or %s not found; preparing only the train split (no validation/test).",
                test_dir, root / "retinopathy_solution.csv",
            )
        else:
            sol = real_builder.unique_rows(sol_rows, "image", counters["test"])
            test_photos = _photos(test_dir)
            by_usage = {"validation": {}, "test": {}}
            for name, row in sol.items():
                usage = row.get("usage", "").lower()
                split = {"public": "validation", "private": "test"}.get(usage)
                if split is None:
                    counters["test"].add("unknown_usage", name)
                else:
                    by_usage[split][name] = row
            for split, rows in by_usage.items():
                tasks[split] = self._tasks({n: test_photos[n] for n in rows if n in test_photos}, rows,
                                           counters[split], missing_from=test_photos)
            for name in sorted(set(test_photos) - set(sol)):
                counters["test"].add("no_label", name)
        for split in [s for s, t in tasks.items() if not t]:  # e.g. a solution file with Private rows only
            logging.warning("eyepacs: no photograph for split %s (skipped: %s); the split is left out", split,
                            counters[split].as_dict() or "none")
        return {s: self._generate(s, t, fn, counters[s]) for s, t in tasks.items() if t}

    @staticmethod
    def _tasks(photos, rows, counter, missing_from=None) -> list[tuple]:
        """(name, path, level, patient, eye) for rows with a photo and valid fields; the rest counted."""
        missing_from = photos if missing_from is None else missing_from
        tasks = []
        for name, row in rows.items():
            m = _NAME.match(name)
            level = real_builder.parse_int(row.get("level", ""), 0, 4)
            if name not in missing_from:
                counter.add("missing_image", name)
            elif not m:
                counter.add("bad_name", name)
            elif level is None:
                counter.add("bad_label", name)
            else:
                tasks.append((name, photos[name], level, int(m.group(1)), m.group(2)))
        if missing_from is photos:
            for name in sorted(set(photos) - set(rows)):
                counter.add("no_label", name)
        return tasks


prepare = real_builder.preparer(Eyepacs)


if __name__ == "__main__":
    real_builder.prepare_main(prepare)
