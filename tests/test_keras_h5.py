"""ImageNet initialisation without network or TensorFlow: Keras HDF5 weights read with h5py, into M-Net and C-Net.

The Keras model here only writes the files and gives the reference (`from_keras`); reading needs h5py alone.
"""

import sys

import h5py
import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec
from keras_models import random_keras_irv2
from tiny import tiny_config

from zoomin_jax import init_from
from zoomin_jax.models import keras_import
from zoomin_jax.models.inception_resnet import FULL_REPEATS

pytestmark = pytest.mark.slow  # Keras weight files (TensorFlow)

keras = pytest.importorskip("keras", reason="writing the weight files needs the test extra (tensorflow-cpu / keras)")

# Not Keras' order (gamma, beta, moving_mean, moving_variance): the reader must go by the names.
_BN_FILE_ORDER = ("moving_variance", "gamma", "beta", "moving_mean")


@pytest.fixture(scope="module")
def keras_model():
    return random_keras_irv2(keras, seed=3)


@pytest.fixture(scope="module")
def reference(keras_model):
    return keras_import.from_keras(keras_model)


def _keras2_name(name: str) -> str:
    """Keras 2 numbers auto-named layers from 1: conv2d -> conv2d_1, conv2d_5 -> conv2d_6."""
    for prefix in ("conv2d", "batch_normalization"):
        if name == prefix:
            return f"{prefix}_1"
        if name.startswith(prefix + "_") and name[len(prefix) + 1:].isdigit():
            return f"{prefix}_{int(name[len(prefix) + 1:]) + 1}"
    return name


def write_legacy_h5(model, path, rename=lambda n: n, with_top=True):
    """The legacy Keras 2 layout of Keras' published files, written with h5py: root attribute `layer_names`,
    one group per layer with attribute `weight_names` (`<layer>/<var>:0`) and the datasets under those names."""
    layers = [(rename(layer.name), layer) for layer in model.layers]
    with h5py.File(path, "w") as f:
        names = [n for n, _ in layers] + (["avg_pool", "predictions"] if with_top else [])
        f.attrs["layer_names"] = np.array([n.encode() for n in names])
        f.attrs["keras_version"] = b"2.1.2"
        f.attrs["backend"] = b"tensorflow"
        for name, layer in layers:
            group = f.create_group(name)
            variables = [(v.path.split("/")[-1], np.asarray(v)) for v in layer.weights]
            if isinstance(layer, keras.layers.BatchNormalization):
                variables.sort(key=lambda kv: _BN_FILE_ORDER.index(kv[0]))
            group.attrs["weight_names"] = np.array([f"{name}/{var}:0".encode() for var, _ in variables])
            for var, value in variables:
                group[f"{name}/{var}:0"] = value
        if with_top:  # the with-top file: a weightless pooling layer and the 1000-way classifier, both ignored
            f.create_group("avg_pool").attrs["weight_names"] = np.array([], dtype="S1")
            top = f.create_group("predictions")
            top.attrs["weight_names"] = np.array([b"predictions/kernel:0", b"predictions/bias:0"])
            top["predictions/kernel:0"] = np.ones((1536, 1000), np.float32)
            top["predictions/bias:0"] = np.zeros((1000,), np.float32)
    return str(path)


def assert_identical(got, want):
    flat_got = jax.tree_util.tree_flatten_with_path(got)[0]
    flat_want = jax.tree_util.tree_flatten_with_path(want)[0]
    assert [p for p, _ in flat_got] == [p for p, _ in flat_want]
    for (path, g), (_, w) in zip(flat_got, flat_want, strict=True):
        assert g.dtype == w.dtype == np.float32, jax.tree_util.keystr(path)
        np.testing.assert_array_equal(g, w, err_msg=jax.tree_util.keystr(path))


@pytest.fixture(scope="module")
def legacy_file(keras_model, tmp_path_factory):
    return write_legacy_h5(keras_model, tmp_path_factory.mktemp("h5") / "irv2_notop.h5")


def test_legacy_file_equals_from_keras(legacy_file, reference):
    got = keras_import.from_keras_h5(legacy_file)
    assert_identical(got, reference)
    # The BatchNorms were stored as (var, beta, mean): only reading by name puts the variance where it belongs.
    assert np.all(got["batch_stats"]["stem_0"]["bn"]["var"] >= 0.5)


def test_keras2_layer_names_convert_identically(keras_model, reference, tmp_path):
    path = write_legacy_h5(keras_model, tmp_path / "keras2.h5", rename=_keras2_name)
    with h5py.File(path) as f:
        names = {n.decode() for n in f.attrs["layer_names"]}
    assert "conv2d_1" in names and "conv2d" not in names and "batch_normalization" not in names
    assert_identical(keras_import.from_keras_h5(path), reference)


def test_keras_legacy_writer_and_whole_model_layout(keras_model, reference, tmp_path):
    """Keras' own legacy HDF5 writer (weight names `conv2d/kernel`, no `:0`), also nested under `model_weights`."""
    legacy = pytest.importorskip("keras.src.legacy.saving.legacy_h5_format")
    path = tmp_path / "keras_writer.h5"
    with h5py.File(path, "w") as f:
        legacy.save_weights_to_hdf5_group(f.create_group("model_weights"), keras_model)
    assert_identical(keras_import.from_keras_h5(str(path)), reference)


def test_keras3_weights_h5_says_how_to_convert(keras_model, tmp_path):
    path = str(tmp_path / "model.weights.h5")
    keras_model.save_weights(path)
    with pytest.raises(ValueError, match=r"Keras 3 `.weights.h5`.*from_keras\(model\)"):
        keras_import.from_keras_h5(path)


def test_garbage_and_truncated_files_fail_clearly(legacy_file, tmp_path):
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"<html>404 Not Found</html>" * 100)
    with pytest.raises(ValueError, match="Could not read .*garbage.h5 as a Keras HDF5 weight file"):
        keras_import.from_keras_h5(str(garbage))
    data = open(legacy_file, "rb").read()
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated.h5.*is the file complete"):
        keras_import.from_keras_h5(str(truncated))
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(ValueError, match="not a Keras weight file"):
        keras_import.from_keras_h5(str(other))


def test_other_network_and_scaled_batchnorm_are_rejected(legacy_file, tmp_path):
    small = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(96, 96, 3), alpha=0.35)
    path = write_legacy_h5(small, tmp_path / "mobilenet.h5", with_top=False)
    with pytest.raises(ValueError, match=r"mobilenet.h5: Keras model has 1 conv\+BN units .* InceptionResNetV2"):
        keras_import.from_keras_h5(path)
    scaled = tmp_path / "scaled.h5"
    scaled.write_bytes(open(legacy_file, "rb").read())
    with h5py.File(scaled, "a") as f:  # a BatchNorm with a scale: not this network's
        group = f["batch_normalization_7"]
        group.attrs["weight_names"] = np.array([b"batch_normalization_7/gamma:0", *group.attrs["weight_names"]])
        group["batch_normalization_7/gamma:0"] = np.ones(group["batch_normalization_7/beta:0"].shape, np.float32)
    with pytest.raises(ValueError, match="scaled.h5: layer 'batch_normalization_7' has a BatchNorm scale"):
        keras_import.from_keras_h5(str(scaled))


def test_missing_h5py_names_the_install(monkeypatch, legacy_file):
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ImportError, match="pip install h5py"):
        keras_import.from_keras_h5(legacy_file)


# ---- init_from: the backbone into M-Net and C-Net, the rest fresh ----


def _fresh():
    """A small stand-in for ZoomInNet's variables: two 'backbones', their heads and A-Net."""
    rng = np.random.default_rng(0)

    def backbone():
        return {"params": {"stem_0": {"conv": {"kernel": rng.normal(size=(3, 3, 3, 4)).astype(np.float32)},
                                      "bn": {"bias": rng.normal(size=(4,)).astype(np.float32)}}},
                "batch_stats": {"stem_0": {"bn": {"mean": rng.normal(size=(4,)).astype(np.float32),
                                                  "var": rng.uniform(1, 2, size=(4,)).astype(np.float32)}}}}

    m, c = backbone(), backbone()
    params = {"mnet": m["params"], "cnet": c["params"],
              "mnet_head": {"kernel": rng.normal(size=(4, 5)).astype(np.float32)},
              "anet": {"score": {"kernel": rng.normal(size=(1, 1, 4, 5)).astype(np.float32)}},
              "fusion_head": {"kernel": rng.normal(size=(8, 5)).astype(np.float32)}}
    return {"params": params, "batch_stats": {"mnet": m["batch_stats"], "cnet": c["batch_stats"]}}


def _backbone():
    fresh = _fresh()
    return jax.tree_util.tree_map(lambda x: np.full_like(x, 7.0),
                                  {"params": fresh["params"]["mnet"], "batch_stats": fresh["batch_stats"]["mnet"]})


def test_merge_backbone_fills_mnet_and_cnet_only():
    fresh, backbone = _fresh(), _backbone()
    before = jax.tree_util.tree_map(np.copy, fresh)
    merged = init_from.merge_backbone(fresh, backbone)
    for name in ("mnet", "cnet"):
        assert_identical(merged["params"][name], backbone["params"])
        assert_identical(merged["batch_stats"][name], backbone["batch_stats"])
    for head in ("mnet_head", "anet", "fusion_head"):
        assert merged["params"][head] is fresh["params"][head]
    assert_identical(fresh, before)  # the input is not modified


def test_merge_backbone_rejects_a_different_layout():
    fresh, backbone = _fresh(), _backbone()
    backbone["params"]["stem_0"]["conv"]["kernel"] = np.zeros((3, 3, 3, 8), np.float32)
    with pytest.raises(ValueError, match=r"params\['mnet'\]\['stem_0'\]\['conv'\]\['kernel'\]: ours \(3, 3, 3, 4\)"):
        init_from.merge_backbone(fresh, backbone)
    backbone = _backbone()
    del backbone["batch_stats"]["stem_0"]
    with pytest.raises(ValueError, match=r"batch_stats\['mnet'\] does not have the backbone's layout: missing"):
        init_from.merge_backbone(fresh, backbone)


def test_backbone_layout_fits_the_full_zoom_in_net(reference):
    """The converted Keras variables have exactly the structure and shapes of the full ZoomInNet's M-Net and C-Net."""
    from zoomin_jax.forward import abstract_variables, build

    c = tiny_config()
    for name in ("mnet", "cnet"):
        c.model[name].repeats, c.model[name].width = FULL_REPEATS, 1.0
    c.model.image_size, c.model.low_res_size, c.model.anet.endpoint = 400, 160, "conv_7b_ac"  # a 3x3 map
    abstract = abstract_variables(build(c), c)
    merged = init_from.merge_backbone(abstract, reference)
    assert merged["params"]["cnet"] is reference["params"] and merged["params"]["anet"] is abstract["params"]["anet"]


def _full_config(path):
    c = tiny_config()
    for name in ("mnet", "cnet"):
        c.model[name].repeats, c.model[name].width = FULL_REPEATS, 1.0
    c.init_from = path
    return c


def test_load_h5_puts_the_backbone_into_both_on_the_target_sharding(monkeypatch):
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("data",))
    repl = NamedSharding(mesh, PartitionSpec())
    fresh_host, backbone = _fresh(), _backbone()
    fresh = jax.device_put(fresh_host, repl)
    target = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=repl), fresh_host)
    read = []
    monkeypatch.setattr(keras_import, "from_keras_h5", lambda p: read.append(p) or backbone)

    out = init_from.load("/weights/irv2.h5", target, _full_config("/weights/irv2.h5"), lambda: fresh)
    assert read == ["/weights/irv2.h5"]
    for leaf in jax.tree_util.tree_leaves(out):
        assert isinstance(leaf, jax.Array) and leaf.sharding == repl
    for name in ("mnet", "cnet"):
        assert_identical(jax.device_get(out["params"][name]), backbone["params"])
        assert_identical(jax.device_get(out["batch_stats"][name]), backbone["batch_stats"])
    assert out["params"]["fusion_head"]["kernel"] is fresh["params"]["fusion_head"]["kernel"]
    assert_identical(jax.device_get(out["params"]["anet"]), fresh_host["params"]["anet"])
    # M-Net and C-Net get separate buffers: the train step donates the state.
    m = out["params"]["mnet"]["stem_0"]["conv"]["kernel"]
    c = out["params"]["cnet"]["stem_0"]["conv"]["kernel"]
    assert m.addressable_data(0).unsafe_buffer_pointer() != c.addressable_data(0).unsafe_buffer_pointer()


def test_load_h5_with_a_reduced_network_names_the_fields():
    def never():
        raise AssertionError("the fresh init must not run for a config the weights cannot fit")

    c = tiny_config()  # (1, 1, 1) repeats, width 0.125, for both
    c.init_from = "/nonexistent/irv2.h5"  # the config is checked before the file is read
    with pytest.raises(ValueError, match=r"fit only the full network.*model\.mnet\.repeats=\(1, 1, 1\), "
                                         r"model\.mnet\.width=0\.125, model\.cnet\.repeats=\(1, 1, 1\)"):
        init_from.load(c.init_from, None, c, never)
    c = _full_config("/nonexistent/irv2.h5")
    c.model.cnet.width = 0.5
    with pytest.raises(ValueError, match="but model.cnet.width=0.5. Use") as err:
        init_from.load(c.init_from, None, c, never)
    assert "mnet" not in str(err.value).split("but")[1]


def test_load_workdir_without_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no checkpoint"):
        init_from.load(str(tmp_path / "run"), None, tiny_config(), lambda: None)
