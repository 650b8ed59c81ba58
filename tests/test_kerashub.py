"""KerasHub backbones (`kerashub:`) on tiny, randomly initialised presets saved to a tmp dir.

Nothing is downloaded: each family is constructed small, written with `save_to_preset` (the
backbone and its image converter) and loaded back through `kerashub:<dir>`, the very path a
downloaded preset takes.
"""

import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tltf
from tltf.backbones import kerashub
from tltf.backbones._kerashub_families import FAMILIES, PRESETS
from tltf.backbones.registry import block_start_indices
from tltf.models.parts import backbone_of, spec_of

_HAS_KERAS_HUB = True
try:
    import keras_hub
except ImportError:  # an optional extra: pip install "tltf[kerashub]" (Python >= 3.11)
    _HAS_KERAS_HUB = False
needs_keras_hub = pytest.mark.skipif(
    not _HAS_KERAS_HUB, reason='keras_hub is not installed (pip install "tltf[kerashub]")')

_IMAGENET = dict(scale=[1 / (255 * s) for s in (0.229, 0.224, 0.225)],
                 offset=[-m / s for m, s in zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])


def _tiny(family):
    """(backbone, converter, size) of a tiny randomly initialised member of a family."""
    m, layers = keras_hub.models, keras_hub.layers
    if family == "vit":
        return (m.ViTBackbone(image_shape=(32, 32, 3), patch_size=8, num_layers=2, num_heads=2,
                              hidden_dim=16, mlp_dim=32),
                layers.ViTImageConverter(image_size=(32, 32), scale=1 / 127.5, offset=-1.0), 32)
    if family == "dinov2":
        return (m.DINOV2Backbone(patch_size=14, num_layers=2, hidden_dim=16, num_heads=2,
                                 intermediate_dim=32, image_shape=(28, 28, 3),
                                 position_embedding_shape=(28, 28, 3)),
                layers.DINOV2ImageConverter(image_size=(28, 28), **_IMAGENET), 28)
    if family == "siglip":  # a SigLIP preset holds both encoders; tltf uses the vision one
        vision = m.SigLIPVisionEncoder(patch_size=8, hidden_dim=16, num_layers=2, num_heads=2,
                                       intermediate_dim=32, image_shape=(32, 32, 3))
        text = m.SigLIPTextEncoder(vocabulary_size=32, embedding_dim=16, hidden_dim=16,
                                   num_layers=1, num_heads=2, intermediate_dim=32,
                                   max_sequence_length=8)
        return (m.SigLIPBackbone(vision, text),
                layers.SigLIPImageConverter(image_size=(32, 32), scale=1 / 127.5, offset=-1.0),
                32)
    if family == "resnet":
        return (m.ResNetBackbone(input_conv_filters=[64], input_conv_kernel_sizes=[3],
                                 stackwise_num_filters=[64, 16], stackwise_num_blocks=[1, 1],
                                 stackwise_num_strides=[1, 2], block_type="basic_block",
                                 image_shape=(None, None, 3)),
                layers.ResNetImageConverter(image_size=(32, 32), **_IMAGENET), 32)
    if family == "efficientnet":  # num_features is not in KerasHub's config: keep 1280
        return (m.EfficientNetBackbone(
            width_coefficient=1.0, depth_coefficient=1.0, stackwise_kernel_sizes=[3, 3],
            stackwise_num_repeats=[1, 2], stackwise_input_filters=[8, 8],
            stackwise_output_filters=[8, 16], stackwise_expansion_ratios=[1, 2],
            stackwise_squeeze_and_excite_ratios=[0.25, 0.25], stackwise_strides=[1, 2],
            stackwise_block_types=["v1", "v1"], stackwise_force_input_filters=[0, 0],
            stackwise_nores_option=[False, False], input_shape=(None, None, 3)),
                layers.EfficientNetImageConverter(image_size=(32, 32), **_IMAGENET), 32)
    assert family == "mobilenet_v3"
    return (m.MobileNetBackbone(
        stackwise_expansion=[[2], [3, 3]], stackwise_num_blocks=[1, 2],
        stackwise_num_filters=[[8], [16, 16]], stackwise_kernel_size=[[3], [3, 3]],
        stackwise_num_strides=[[2], [2, 1]], stackwise_se_ratio=[[None], [0.25, 0.25]],
        stackwise_activation=[["relu"], ["hard_swish", "hard_swish"]],
        stackwise_padding=[[1], [1, 1]], output_num_filters=32, depthwise_filters=8,
        depthwise_stride=2, depthwise_residual=False, last_layer_filter=32,
        squeeze_and_excite=0.5, image_shape=(None, None, 3)),
            layers.MobileNetImageConverter(image_size=(32, 32), scale=1 / 255.0), 32)


TESTED = ["vit", "dinov2", "siglip", "resnet", "efficientnet", "mobilenet_v3"]
_BN_FAMILIES = {"resnet", "efficientnet", "mobilenet_v3"}


@pytest.fixture(scope="module")
def presets(tmp_path_factory):
    """family -> (preset directory, input size), written once for the module."""
    if not _HAS_KERAS_HUB:
        pytest.skip('keras_hub is not installed (pip install "tltf[kerashub]")')
    out = {}
    for family in TESTED:
        directory = tmp_path_factory.mktemp(f"preset_{family}")
        backbone, converter, size = _tiny(family)
        backbone.save_to_preset(str(directory))
        converter.save_to_preset(str(directory))
        out[family] = (str(directory), size)
    return out


def _pixels(size, n=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3)).astype("float32")


def test_without_keras_hub_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "keras_hub", None)  # `import keras_hub` now fails
    with pytest.raises(ImportError, match=re.escape('pip install "tltf[kerashub]"')):
        tltf.build_classifier("kerashub:vit_base_patch16_224_imagenet", 2, weights=None)
    with pytest.raises(ImportError, match=re.escape('pip install "tltf[kerashub]"')):
        tltf.build_classifier("kerashub:/some/preset_dir", 2)


def test_registered_presets_list_without_keras_hub():
    names = tltf.list_backbones("kerashub:*")
    assert names == sorted(f"kerashub:{p[0]}" for p in PRESETS)
    spec = tltf.get_backbone("kerashub:vit_base_patch16_224_imagenet")
    assert (spec.family, spec.default_size, spec.feature_dim, len(spec.blocks)) == (
        "kerashub_vit", 224, 768, 12)
    assert tltf.get_backbone("kerashub:dinov2_small").pretrained_sizes is None  # interpolated
    code = "import sys, tltf; tltf.list_backbones('kerashub:*'); print('keras_hub' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # listing and importing tltf never import keras_hub


@needs_keras_hub
@pytest.mark.parametrize("family", TESTED)
def test_spec_from_a_local_preset(presets, family):
    directory, size = presets[family]
    spec = tltf.get_backbone(f"kerashub:{directory}")
    assert spec.family == f"kerashub_{family}"
    assert spec.default_size == size and spec.name == f"kerashub:{directory}"
    assert len(spec.blocks) == (4 if family == "mobilenet_v3" else 2)
    assert spec.preprocessing.startswith("affine:")


@needs_keras_hub
@pytest.mark.parametrize("family", TESTED)
def test_flat_backbone_computes_what_kerashub_computes(presets, family):
    directory, size = presets[family]
    spec = kerashub.kerashub_backbone(directory)
    net = spec.constructor(input_shape=(size, size, 3))
    hub = keras_hub.models.Backbone.from_preset(directory)
    x = _pixels(size, 2) / 127.5 - 1
    if family == "siglip":
        expected = np.asarray(hub.vision_encoder({"images": x}))
    elif family == "dinov2":
        expected = np.asarray(hub({"images": x}))[:, 0]
    else:
        out = np.asarray(hub(x))
        expected = out[:, 0] if FAMILIES[family].output == "cls_token" else out.mean(axis=(1, 2))
    np.testing.assert_allclose(np.asarray(net(x)), expected, rtol=1e-5, atol=1e-6)
    assert net.output_shape == (None, spec.feature_dim)


@needs_keras_hub
@pytest.mark.parametrize("family", TESTED)
def test_preprocessing_equals_the_preset_converter(presets, family):
    directory, size = presets[family]
    model = tltf.build_classifier(f"kerashub:{directory}", 3)
    converter = keras_hub.layers.ImageConverter.from_preset(directory)
    x = _pixels(size)
    ours = np.asarray(model.get_layer("preprocessing")(x))
    assert np.array_equal(ours, np.asarray(converter(x)))  # bit for bit, not just close


@needs_keras_hub
@pytest.mark.parametrize("family", TESTED)
def test_two_phase_fine_tune_changes_exactly_the_unfrozen_blocks(presets, family):
    directory, size = presets[family]
    model = tltf.build_classifier(f"kerashub:{directory}", 2, seed=0)
    backbone = backbone_of(model)
    before = {v.path: v.numpy() for v in backbone.weights}
    x, y = _pixels(size, 16, seed=1), np.arange(16) % 2
    tltf.fine_tune(model, (x, y), head_epochs=1, finetune_epochs=2, unfreeze="top_blocks:1",
                   finetune_lr=1e-2, batch_size=8, early_stopping=False, seed=0, verbose=0)
    start = block_start_indices(spec_of(model), backbone)[-1]
    changed, expected = set(), set()
    for i, layer in enumerate(backbone.layers):
        moved = [not np.array_equal(before[v.path], v.numpy()) for v in layer.weights]
        if any(moved):
            changed.add(layer.name)
        if i >= start and layer.trainable_weights:
            expected.add(layer.name)
    assert expected and changed == expected
    bns = [w for w in backbone.weights if "moving_" in w.path]
    assert (len(bns) > 0) == (family in _BN_FAMILIES)
    for w in bns:  # BatchNorm statistics never move
        assert np.array_equal(before[w.path], w.numpy()), w.path


@needs_keras_hub
def test_saved_models_reload_in_a_fresh_process_without_the_presets(presets, tmp_path):
    """The .keras file carries the whole backbone: the preset directory can be gone."""
    expected = {}
    for family in TESTED:
        directory, size = presets[family]
        copy = tmp_path / f"preset_{family}"
        shutil.copytree(directory, copy)
        model = tltf.build_classifier(f"kerashub:{copy}", 3, class_names=["a", "b", "c"])
        model.save(tmp_path / f"{family}.keras")
        expected[family] = (model.predict(_pixels(size), verbose=0).tolist(),
                            list(spec_of(model).blocks), size)
        shutil.rmtree(copy)
    script = textwrap.dedent(f"""
        import json, sys, numpy as np, tltf
        from tltf.models.parts import spec_of
        out = {{}}
        for family, size in {json.dumps({f: v[2] for f, v in expected.items()})}.items():
            model = tltf.load_model(r"{tmp_path}/" + family + ".keras")  # safe mode
            x = np.random.default_rng(0).integers(0, 256, (8, size, size, 3)).astype("float32")
            out[family] = (model.predict(x, verbose=0).tolist(), list(spec_of(model).blocks))
        print(json.dumps(out))
    """)
    env = {**os.environ, "KAGGLEHUB_CACHE": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    for family, (predictions, blocks, _) in expected.items():
        assert loaded[family][1] == blocks
        np.testing.assert_array_equal(np.array(loaded[family][0]), np.array(predictions))


@needs_keras_hub
@pytest.mark.parametrize("family", TESTED)
def test_tflite_float32_agrees_with_keras(presets, family, tmp_path):
    directory, size = presets[family]
    model = tltf.build_classifier(f"kerashub:{directory}", 4, seed=0)
    result = tltf.export_tflite(model, tmp_path / "model.tflite", metadata=False,
                                class_names=["a", "b", "c", "d"])
    x = _pixels(size, 32, seed=2)
    report = tltf.verify_tflite(result.path, model, x)
    assert report.top1_agreement == 1.0 and report.max_abs_diff < 1e-4


@needs_keras_hub
def test_int8_export_is_measured(presets, tmp_path):
    directory, size = presets["efficientnet"]
    model = tltf.build_classifier(f"kerashub:{directory}", 4, seed=0)
    x = _pixels(size, 32, seed=3)
    result = tltf.export_tflite(model, tmp_path / "model.tflite", quantization="int8",
                                representative_data=x, metadata=False,
                                class_names=["a", "b", "c", "d"])
    report = tltf.verify_tflite(result.path, model, x)
    assert report.num_samples == 32 and 0.0 <= report.top1_agreement <= 1.0


@needs_keras_hub
def test_a_spec_that_disagrees_with_its_preset_raises(presets):
    directory, size = presets["vit"]
    good = kerashub.kerashub_backbone(directory)
    wrong_width = kerashub._spec("x", directory, FAMILIES["vit"], size=size, feature_dim=99,
                                 blocks=good.blocks, preprocessing=good.preprocessing)
    with pytest.raises(ValueError, match="spec says 99"):
        wrong_width.constructor(input_shape=(size, size, 3))
    wrong_pixels = kerashub._spec("x", directory, FAMILIES["vit"], size=size, feature_dim=16,
                                  blocks=good.blocks, preprocessing="affine:0.5/0.0")
    with pytest.raises(ValueError, match="preprocess differently"):
        wrong_pixels.constructor(input_shape=(size, size, 3))
    wrong_size = kerashub._spec("x", directory, FAMILIES["vit"], size=64, feature_dim=16,
                                blocks=good.blocks, preprocessing=good.preprocessing)
    with pytest.raises(ValueError, match="takes 32x32 images, but its spec says 64"):
        wrong_size.constructor(input_shape=(64, 64, 3))


@needs_keras_hub
def test_a_file_cannot_smuggle_code_in_the_backbone_config():
    """The backbone config is deserialized by Keras in safe mode: a lambda is refused."""
    import keras

    config = {"module": "tltf.backbones.kerashub", "class_name": "KerasHubBackbone",
              "registered_name": "tltf>KerasHubBackbone",
              "config": {"family": "vit", "name": "backbone",
                         "backbone": keras.saving.serialize_keras_object(
                             keras.layers.Lambda(lambda x: x * 2))}}
    with pytest.raises(ValueError, match="(?i)lambda"):
        keras.saving.deserialize_keras_object(config, safe_mode=True)


@needs_keras_hub
def test_a_fixed_size_family_refuses_another_size(presets):
    directory, _ = presets["vit"]
    with pytest.raises(ValueError, match="takes 32x32 images only"):
        tltf.build_classifier(f"kerashub:{directory}", 2, image_size=64, weights=None)


@needs_keras_hub
def test_missing_presets_raise_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="local preset directory"):
        tltf.build_classifier(f"kerashub:{tmp_path / 'nowhere'}", 2)
    empty = tmp_path / "empty_preset"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        tltf.build_classifier(f"kerashub:{empty}", 2)


@needs_keras_hub
def test_a_handle_that_cannot_be_fetched_names_it_and_the_local_way(tmp_path, monkeypatch):
    """Offline (here) or online (no such model): one error naming the preset and what to do."""
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path))
    handle = "kaggle://tltf-tests/no-such-model/keras/tiny"
    with pytest.raises(FileNotFoundError, match=re.escape(f"'{handle}'") + ".*could not be "
                       "downloaded.*save_to_preset.*kerashub:<dir>"):
        tltf.build_classifier(f"kerashub:{handle}", 2)


@needs_keras_hub
def test_a_preset_without_its_converter_says_how_to_add_it(tmp_path):
    backbone, _, _ = _tiny("vit")
    backbone.save_to_preset(str(tmp_path))
    with pytest.raises(ValueError, match="no image converter"):
        kerashub.kerashub_backbone(str(tmp_path))


@needs_keras_hub
@pytest.mark.parametrize("name", ["kerashub_backbone", "KerasHubBackbone"])
def test_the_docstring_examples_run(name):
    """These examples need keras_hub, so they are fenced code run here, not doctests."""
    doc = inspect.getdoc(getattr(kerashub, name))
    code = doc.split("```python", 1)[1].split("```", 1)[0]
    exec(textwrap.dedent(code), dict(vars(kerashub)))


@needs_keras_hub
def test_a_kerashub_backbone_goes_through_every_tltf_entry_point(presets, tmp_path):
    """The CLI's train (with float16 export), evaluate, a one-trial search and the dynamic-range
    export take a `kerashub:` backbone like any other: no special case."""
    from image_cases import photo_folder

    from tltf.cli import main

    directory, size = presets["mobilenet_v3"]
    photos = photo_folder(tmp_path / "photos", n=8)
    out = tmp_path / "run"
    assert main(["train", "--data", str(photos), "--backbone", f"kerashub:{directory}",
                 "--image-size", str(size), "--out", str(out), "--head-epochs", "1",
                 "--finetune-epochs", "1", "--weights", "none", "--tflite", "float16"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["state"] == "finished" and run["identity"]["backbone"] == f"kerashub:{directory}"
    assert (out / "model.tflite").is_file()
    assert (out / "model.labels.txt").read_text().split() == ["blue", "red"]

    model = tltf.load_model(out / "model.keras")
    data = tltf.load_image_folder(photos, image_size=size, verbose=0)
    report = tltf.evaluate(model, data)
    assert report.num_samples == 16 and report.class_names == ["blue", "red"]
    dynamic = tltf.export_tflite(model, tmp_path / "dynamic.tflite", quantization="dynamic",
                                 metadata=False)
    assert tltf.verify_tflite(dynamic.path, model, data).num_samples == 16

    found = tltf.search(data, data, backbone=f"kerashub:{directory}", image_size=size,
                        weights=None, max_trials=1, head_epochs=1, finetune_epochs=1,
                        directory=tmp_path / "search", verbose=0, best_model=None)
    assert len(found.trials) == 1
