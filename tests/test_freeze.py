"""tltf.training.freeze: what is trainable after freeze_backbone / unfreeze, BatchNorm kept frozen."""

import keras
import pytest

from tltf.backbones.registry import block_start_indices, get_backbone
from tltf.models.classifier import build_classifier
from tltf.models.parts import backbone_of, head_of
from tltf.training.freeze import freeze_backbone, parse_unfreeze, unfreeze


@pytest.fixture
def model():
    return build_classifier("mobilenet_v2", 3, image_size=32, weights=None)


def _bn_layers(backbone):
    return [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]


def test_freeze_backbone_leaves_only_the_head_trainable(model):
    unfreeze(model, "all")
    freeze_backbone(model)
    head_vars = {id(v) for v in head_of(model).trainable_weights}
    assert head_vars
    assert {id(v) for v in model.trainable_weights} == head_vars


def test_top_blocks_unfreezes_from_the_registry_boundary_and_keeps_bn_frozen(model):
    backbone = backbone_of(model)
    starts = block_start_indices(get_backbone("mobilenet_v2"), backbone)
    names = unfreeze(model, "top_blocks:2")
    start = starts[-2]
    assert names[0] == backbone.layers[start].name
    for i, layer in enumerate(backbone.layers):
        if isinstance(layer, keras.layers.BatchNormalization):
            assert not layer.trainable, layer.name
        elif layer.weights:
            assert layer.trainable == (i >= start), layer.name
    assert head_of(model).trainable
    # Only the kernels above the boundary (and the head) train; no BN gamma/beta.
    assert not any("gamma" in v.path or "beta" in v.path for v in model.trainable_weights)


def test_more_blocks_than_exist_warns_and_unfreezes_all(model):
    with pytest.warns(UserWarning, match="has only 16; unfreezing all"):
        names = unfreeze(model, "top_blocks:99")
    backbone = backbone_of(model)
    assert names[0] == backbone.layers[0].name
    weighted = [layer for layer in backbone.layers
                if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)]
    assert all(layer.trainable for layer in weighted)
    assert not any(layer.trainable for layer in _bn_layers(backbone))


def test_fraction_unfreezes_that_share_of_weighted_layers(model):
    backbone = backbone_of(model)
    weighted = [layer for layer in backbone.layers if layer.weights]
    unfreeze(model, "fraction:0.25")
    count = -(-len(weighted) // 4)  # ceil
    top, below = weighted[len(weighted) - count:], weighted[: len(weighted) - count]
    assert all(layer.trainable for layer in top
               if not isinstance(layer, keras.layers.BatchNormalization))
    assert not any(layer.trainable for layer in below)


def test_from_layer_name(model):
    backbone = backbone_of(model)
    names = unfreeze(model, "from:block_15_expand")
    assert names[0] == "block_15_expand"
    assert not backbone.get_layer("block_14_project").trainable
    assert backbone.get_layer("Conv_1").trainable


def test_train_bn_true_makes_bn_trainable(model):
    unfreeze(model, "all", train_bn=True)
    assert all(layer.trainable for layer in _bn_layers(backbone_of(model)))


def test_parse_unfreeze_forms():
    assert parse_unfreeze("all") == ("all", None)
    assert parse_unfreeze("top_blocks:3") == ("top_blocks", 3)
    assert parse_unfreeze("fraction:0.5") == ("fraction", 0.5)
    assert parse_unfreeze("from:conv") == ("from", "conv")


@pytest.mark.parametrize("how, match", [
    ("top", "must be one of"),
    ("top_blocks:0", "integer N >= 1"),
    ("top_blocks:two", "integer N >= 1"),
    ("fraction:1.5", "0 < F <= 1"),
    ("fraction:x", "0 < F <= 1"),
    ("from:", "must be one of"),
])
def test_bad_unfreeze_strings_raise(how, match):
    with pytest.raises(ValueError, match=match):
        parse_unfreeze(how)


def test_unfreeze_not_a_string_raises(model):
    with pytest.raises(TypeError, match="must be a string"):
        unfreeze(model, 3)


def test_unknown_layer_name_lists_close_matches(model):
    with pytest.raises(ValueError, match=r"names no layer.*block_15_expand"):
        unfreeze(model, "from:block_15_expnd")


def test_top_blocks_on_a_user_backbone_raises():
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    user = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    model = build_classifier(user, 2, image_size=32, weights=None)
    with pytest.raises(ValueError, match="needs the block boundaries of a tltf backbone spec"):
        unfreeze(model, "top_blocks:1")
    assert unfreeze(model, "all")
