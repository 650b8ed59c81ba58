"""The registry: every backbone builds, preprocesses like its family and has real blocks."""

import keras
import numpy as np
import pytest

from tltf.backbones.registry import (
    BackboneSpec,
    block_start_indices,
    get_backbone,
    list_backbones,
    register_backbone,
)
from tltf.models.classifier import build_classifier
from tltf.models.parts import backbone_of
from tltf.models.preprocessing import Preprocessing

BIG = {"convnext_large", "convnext_xlarge", "efficientnet_b5", "efficientnet_b6",
       "efficientnet_b7", "efficientnet_v2_l", "efficientnet_v2_m", "nasnet_large",
       "inception_resnet_v2", "resnet152", "resnet152_v2", "convnext_base", "vgg19"}
KERAS_NAMES = [n for n in list_backbones() if not n.startswith(("hub:", "kerashub:"))]
PREPROCESS_MODULE = {
    "resnet": "resnet", "resnet_v2": "resnet_v2", "mobilenet": "mobilenet",
    "mobilenet_v2": "mobilenet_v2", "mobilenet_v3": "mobilenet_v3",
    "efficientnet": "efficientnet", "efficientnet_v2": "efficientnet_v2",
    "convnext": "convnext", "densenet": "densenet", "xception": "xception",
    "inception_v3": "inception_v3", "inception_resnet_v2": "inception_resnet_v2",
    "nasnet": "nasnet", "vgg": "vgg16",
}


def _params():
    return [pytest.param(name, marks=[pytest.mark.slow] if name in BIG else [], id=name)
            for name in KERAS_NAMES]


@pytest.mark.parametrize("name", _params())
def test_every_backbone_builds_and_its_blocks_exist(name):
    spec = get_backbone(name)
    size = max(spec.min_size, 32)
    model = build_classifier(name, 3, image_size=size, weights=None)
    images = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")
    out = np.asarray(model(images, training=False))  # eager: no tracing, keeps the table fast
    assert out.shape == (2, 3)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
    backbone = backbone_of(model)
    assert backbone.output_shape == (None, spec.feature_dim)
    starts = block_start_indices(spec, backbone)
    assert len(starts) == len(spec.blocks) >= 3
    assert len(set(starts)) == len(starts), "two blocks start at the same layer"
    keras.backend.clear_session()


def test_registry_covers_the_keras_applications_families():
    families = {get_backbone(n).family for n in KERAS_NAMES}
    assert families == set(PREPROCESS_MODULE)
    for name in ["mobilenet", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
                 "efficientnet_b0", "efficientnet_b7", "efficientnet_v2_b0", "efficientnet_v2_s",
                 "efficientnet_v2_l", "resnet50", "resnet101_v2", "resnet152_v2",
                 "convnext_xlarge", "densenet201", "xception", "inception_v3",
                 "inception_resnet_v2", "nasnet_mobile", "nasnet_large", "vgg16", "vgg19"]:
        assert name in KERAS_NAMES


@pytest.mark.parametrize("family", sorted(PREPROCESS_MODULE))
def test_preprocessing_matches_the_family_preprocess_input(family):
    spec = next(get_backbone(n) for n in KERAS_NAMES if get_backbone(n).family == family)
    pixels = np.random.default_rng(1).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    reference = getattr(keras.applications, PREPROCESS_MODULE[family]).preprocess_input
    expected = np.asarray(reference(pixels.copy()))
    if spec.preprocessing == "none":
        # These families normalise inside the model; their preprocess_input is the identity.
        np.testing.assert_array_equal(expected, pixels)
    got = np.asarray(Preprocessing(spec.preprocessing)(pixels))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_list_backbones_wildcards_and_aliases():
    assert list_backbones("efficientnet_b?") == [f"efficientnet_b{i}" for i in range(8)]
    assert "mobilenet_v2_035" in list_backbones("*mobile*")
    assert list_backbones("no_such_*") == []
    assert get_backbone("mobilenetv2") is get_backbone("mobilenet_v2")
    assert get_backbone("MobileNet-V2") is get_backbone("mobilenet_v2")


def test_unknown_backbone_lists_close_matches():
    with pytest.raises(ValueError, match=r"Unknown backbone 'mobilenet_v3'.*mobilenet_v3_small"):
        get_backbone("mobilenet_v3")
    with pytest.raises(ValueError, match=r"efficientnet_b0.*list_backbones"):
        get_backbone("efficentnet_b0")
    with pytest.raises(TypeError, match="Received: backbone=3"):
        get_backbone(3)


def _tiny(input_shape, weights=None, pooling="avg"):
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(4, 3, name="block1_conv")(inputs)
    x = keras.layers.Conv2D(4, 3, name="block2_conv")(x)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))


def test_register_backbone_and_duplicate_name():
    spec = BackboneSpec(name="test_tiny_net", constructor=_tiny, default_size=32,
                        pretrained_sizes=None, preprocessing="unit", feature_dim=4,
                        blocks=("block1", "block2"), family="custom", aliases=("tiny_alias",))
    register_backbone(spec)
    assert get_backbone("tiny_alias") is spec
    model = build_classifier("test_tiny_net", 2, weights=None)
    assert model.predict(np.zeros((1, 32, 32, 3)), verbose=0).shape == (1, 2)
    with pytest.raises(ValueError, match="'test_tiny_net' is already registered"):
        register_backbone(spec)
    with pytest.raises(TypeError, match="expects a BackboneSpec"):
        register_backbone("test_tiny_net")


def test_spec_validation_and_bad_block_boundaries():
    with pytest.raises(ValueError, match="`preprocessing` must be one of"):
        BackboneSpec(name="x", constructor=_tiny, default_size=32, pretrained_sizes=None,
                     preprocessing="imagenet", feature_dim=4, blocks=(), family="custom")
    spec = BackboneSpec(name="x", constructor=_tiny, default_size=32, pretrained_sizes=None,
                        preprocessing="unit", feature_dim=4, blocks=("block7",), family="custom")
    with pytest.raises(ValueError, match="Block boundary 'block7'.*matches no layer"):
        block_start_indices(spec, _tiny((32, 32, 3)))
