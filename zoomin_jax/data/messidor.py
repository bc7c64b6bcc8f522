"""TFDS builder for Messidor (1,200 photographs, 3 ophthalmology departments), read in the download's own layout.

One split, `test`: the paper trains on EyePACS and evaluates on Messidor (take `test[:80%]` etc. to fine-tune).
Photos are the `.tif` files of the `Base11` ... `Base34` folders; grades come from each folder's
`Annotation_BaseNN.xls` (read with xlrd) or a `.csv` export of it. `.xlsx` is not read: save it as .xls or .csv.

`label` is Messidor's **retinopathy grade 0-3, which is not the ICDR scale** of EyePACS and IDRiD: it counts
microaneurysms and haemorrhages and marks neovascularisation (0 normal; 1: MA <= 5 and H = 0; 2: 5 < MA < 15 or
0 < H < 5, no neovascularisation; 3: MA >= 15 or H >= 5 or neovascularisation). Compare with ICDR only through the
binary tasks: normal (0) vs abnormal (1-3), and the paper's referable split. `macular_edema` is the risk 0-2.

Messidor's published errata list images twice in the sheets; rows are de-duplicated by image name across all
bases: identical repeats kept once (reported apart as merged duplicates, not skips), repeats that disagree skip
the image ("conflicting_rows"); each image is counted once, under the first reason found.
Also skipped and counted: `preprocess.BadPhoto` reasons, "missing_image", "no_label", "bad_label".
"""

from __future__ import annotations

import csv
import functools
import os
from pathlib import Path

import tensorflow_datasets as tfds

from zoomin_jax.data import real_builder, skips

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download Messidor (the Messidor program database, ADCIS / Messidor project) and extract each base archive
(Base11.zip ... Base34.zip) into its own folder:
  <manual_dir>/Base11/20051019_38557_0100_PP.tif ... and <manual_dir>/Base11/Annotation_Base11.xls
  ... <manual_dir>/Base34/...
The .xls sheets are read with the `xlrd` package; a .csv export of a sheet (same columns) works too.
Then: python -m zoomin_jax.data.messidor --manual_dir=<manual_dir> --data_dir=<tfds dir> --image_size=400
"""
_HOW = "How to get it:\n" + MANUAL_DOWNLOAD_INSTRUCTIONS
_COLUMNS = {
    "image name": "image",
    "ophthalmologic department": "department",
    "retinopathy grade": "grade",
    "risk of macular edema": "edema",
}


def _cell(v) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v).strip()


def read_sheet(path: Path) -> list[dict[str, str]]:
    """Rows of an Annotation_BaseNN sheet (.xls or .csv) with keys image, department, grade, edema."""
    if path.suffix.lower() == ".xls":
        try:
            import xlrd
        except ImportError as e:
            raise ImportError(f"messidor: reading {path} needs the xlrd package (pip install xlrd), "
                              "or save the sheet as .csv beside it.") from e
        sheet = xlrd.open_workbook(os.fspath(path)).sheet_by_index(0)
        table = [[_cell(v) for v in sheet.row_values(r)] for r in range(sheet.nrows)]
    else:
        with open(path, newline="", encoding="utf-8-sig") as f:
            sample = f.read(4096)
            f.seek(0)
            dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
            table = [[c.strip() for c in row] for row in csv.reader(f, dialect)]
    if not table:
        return []
    header = [_COLUMNS.get(h.strip().lower(), "") for h in table[0]]
    missing = {"image", "grade", "edema"} - set(header)
    if missing:
        raise ValueError(f"messidor: {path} lacks the columns {sorted(missing)} (header: {table[0]})")
    return [{k: v for k, v in zip(header, row, strict=False) if k} for row in table[1:]]


def _sheet(base: Path) -> Path | None:
    for ext in (".xls", ".csv"):
        found = sorted(p for p in base.iterdir() if p.name.lower().startswith("annotation") and p.suffix == ext)
        if found:
            return found[0]
    return None


def _example(task, config: real_builder.RealConfig) -> dict:
    name, path, grade, edema, department, base = task
    fields = {"id": name, "label": grade, "macular_edema": edema, "department": department, "base": base}
    return real_builder.photo_example(path, config, fields)


class Messidor(real_builder.RealBuilder):
    """Messidor photographs, Messidor retinopathy grade 0-3 (not ICDR) and macular-edema risk 0-2."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "First release.",
                     "1.1.0": "fov_rows stored, taken before Graham as for IDRiD and predict (data/photo.py)."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    _MANUAL_WHAT = "the extracted Messidor folders Base11 ... Base34"
    _DESCRIPTION = "Messidor fundus photographs: Messidor retinopathy grade 0-3 (not ICDR), macular edema 0-2."
    _HOMEPAGE = "https://www.adcis.net/en/third-party/messidor/"
    _CITATION = (
        "Decencière et al., Feedback on a publicly distributed image database: the Messidor database, "
        "Image Analysis & Stereology 33(3):231-234, 2014."
    )

    def _extra_features(self) -> dict:
        return {
            "macular_edema": tfds.features.ClassLabel(num_classes=3),
            "department": tfds.features.Text(),
            "base": tfds.features.Text(),
        }

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = real_builder.require(Path(dl_manager.manual_dir), "the folder with the extracted Base11..Base34 folders",
                             "messidor", _HOW)
        bases = sorted(p for p in root.iterdir() if p.is_dir() and p.name.lower().startswith("base"))
        if not bases:
            real_builder.require(root / "Base11", "the extracted Messidor base folders Base11 ... Base34", "messidor",
                                 _HOW)
        counter = skips.SkipCounter("test")
        rows, photos = [], {}
        for base in bases:
            sheet = _sheet(base)
            if sheet is None:
                real_builder.require(base / f"Annotation_{base.name}.xls", f"the annotation sheet of {base.name}",
                              "messidor", _HOW)
            rows += [{**r, "base": base.name} for r in read_sheet(sheet)]
            photos.update({p.stem: p for p in sorted(base.iterdir()) if p.suffix.lower() in (".tif", ".tiff")})
        for r in rows:
            r["image"] = Path(r["image"]).stem
        labels = real_builder.unique_rows(rows, "image", counter, compare=("grade", "edema"))
        tasks = []
        for name, r in labels.items():
            grade = real_builder.parse_int(r.get("grade", ""), 0, 3)
            edema = real_builder.parse_int(r.get("edema", ""), 0, 2)
            if name not in photos:
                counter.add("missing_image", name)
            elif grade is None or edema is None:
                counter.add("bad_label", name)
            else:
                tasks.append((name, photos[name], grade, edema, r.get("department", ""), r["base"]))
        for name in sorted(set(photos) - {Path(r["image"]).stem for r in rows}):
            counter.add("no_label", name)
        fn = functools.partial(_example, config=self.builder_config)
        return {"test": self._generate("test", tasks, fn, counter)}


prepare = real_builder.preparer(Messidor)


if __name__ == "__main__":
    real_builder.prepare_main(prepare)
