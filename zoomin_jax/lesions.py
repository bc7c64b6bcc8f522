"""Lesion kinds across all datasets, in the order their integer codes in dataset records follow.

A module of its own with no imports, so metrics, the generator and the contact sheet share one list without
pulling in tensorflow_datasets.
"""

LESION_KINDS = (
    "microaneurysm",
    "haemorrhage",
    "hard_exudate",
    "cotton_wool_spot",
    "new_vessels",
    "preretinal_haemorrhage",
)
