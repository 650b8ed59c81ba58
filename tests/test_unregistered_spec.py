"""A model carries its backbone spec: an unregistered spec fine-tunes, saves, reloads and exports."""

import keras
import numpy as np
import tensorflow as tf

from tltf import build_classifier, export_tflite, fine_tune, load_model, unfreeze
from tltf.backbones.registry import BackboneSpec, list_backbones
from tltf.models.parts import backbone_of, spec_of


def _constructor(input_shape, weights=None, pooling="avg"):
    inputs = keras.Input(tuple(input_shape))
    x = inputs
    for i in (1, 2, 3):
        x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name=f"stage{i}_conv")(x)
        x = keras.layers.BatchNormalization(name=f"stage{i}_bn")(x)
        x = keras.layers.ReLU(name=f"stage{i}_relu")(x)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="pool")(x))


SPEC = BackboneSpec(name="my_private_net", constructor=_constructor, default_size=32,
                    pretrained_sizes=None, preprocessing="unit", feature_dim=8,
                    blocks=("stage1", "stage2", "stage3"), family="mine", min_size=32)


def test_an_unregistered_spec_fine_tunes_saves_reloads_and_exports(tmp_path):
    assert "my_private_net" not in list_backbones()
    rng = np.random.default_rng(0)
    y = np.arange(32) % 2
    x = (rng.uniform(0, 150, (32, 32, 32, 3)) + 100 * y[:, None, None, None]).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    model = build_classifier(SPEC, 2, image_size=32, weights=None, class_names=["a", "b"])
    # Phase 2 unfreezes by the spec's blocks: it used to raise "Unknown backbone".
    result = fine_tune(model, data, data, head_epochs=1, finetune_epochs=1,
                       unfreeze="top_blocks:1", verbose=0)
    assert result.history["phase"] == [1, 2]
    trainable = [layer.name for layer in backbone_of(model).layers if layer.trainable_weights]
    assert trainable == ["stage3_conv"]  # only the top block, BatchNorm kept frozen

    model.save(tmp_path / "m.keras")
    reloaded = load_model(tmp_path / "m.keras")
    assert spec_of(reloaded).blocks == SPEC.blocks and spec_of(reloaded).name == "my_private_net"
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)
    unfreeze(reloaded, "top_blocks:2")
    assert [layer.name for layer in backbone_of(reloaded).layers if layer.trainable_weights] == [
        "stage2_conv", "stage3_conv"]
    exported = export_tflite(reloaded, tmp_path / "m.tflite", metadata=False)
    assert exported.size_bytes > 0
