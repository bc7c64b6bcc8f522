"""Every shipped config loads, can work on 8 devices, and documents its command first."""

import importlib
import pathlib

import pytest

from zoomin_jax.validate import validate_config

CONFIGS = sorted(p.stem for p in (pathlib.Path(__file__).parent.parent / "configs").glob("*.py"))


@pytest.mark.parametrize("name", CONFIGS)
def test_config_is_valid_and_documented(name):
    module = importlib.import_module(f"configs.{name}")
    c = module.get_config()
    validate_config(c, 8)
    doc = module.__doc__.split("\n\n", 1)[1]
    assert doc.startswith("Command:") and "python -m zoomin_jax.main" in doc
    assert "Hardware:" in module.__doc__
    steps = [c.stages[s].steps for s in c.stage_order]
    assert all(s > 0 for s in steps) and set(c.stage_order) <= set(c.stages)


def test_configs_found():
    assert {"default", "full", "idrid", "messidor_eval"} <= set(CONFIGS)
