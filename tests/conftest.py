"""Shared fixtures: offline ImageNet weights through KERAS_HOME, ../shared data, clean globals."""

import os
import sys
import tempfile
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
_NO_SHARED = f"needs the shared data folder {SHARED} (real weights and images); absent here"


def _seed_keras_home() -> None:
    # Keras looks in $KERAS_HOME/models/ before it downloads, so copying the shared weights
    # there lets the real `weights="imagenet"` path run on a machine without network access.
    # Runs at import time so that every test (and Keras itself) sees the same KERAS_HOME.
    if os.environ.get("TLTF_TEST_KERAS_HOME"):
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    from seed_keras_home import seed_keras_home

    home = seed_keras_home() or Path(tempfile.mkdtemp(prefix="tltf-keras-home-"))
    os.environ["KERAS_HOME"] = str(home)
    os.environ["TLTF_TEST_KERAS_HOME"] = str(home)


_seed_keras_home()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(_NO_SHARED)
    return SHARED


@pytest.fixture(scope="session")
def imagenet_weights(shared_dir) -> Path:
    """The shared ImageNet weights (already in KERAS_HOME); tests never download weights."""
    path = shared_dir / "keras_weights"
    if not path.is_dir():
        pytest.skip(f"needs the ImageNet weights in {path}; absent here")
    return path


@pytest.fixture(scope="session")
def cats_dogs_dir(shared_dir) -> Path:
    path = shared_dir / "datasets" / "cats_and_dogs_filtered"
    if not path.is_dir():
        pytest.skip(f"needs {path}; absent here")
    return path


@pytest.fixture(scope="session")
def hub_module_dir(shared_dir) -> Path:
    path = shared_dir / "tfhub_modules" / "imagenet_mobilenet_v2_035_128_feature_vector_2"
    if not path.is_dir():
        pytest.skip(f"needs {path}; absent here")
    return path


@pytest.fixture(scope="session")
def keras_home() -> Path:
    """The KERAS_HOME seeded for this test session (its models/ holds the shared weights)."""
    return Path(os.environ["KERAS_HOME"])


@pytest.fixture(autouse=True)
def _restore_keras_globals():
    """Every test leaves the global dtype policy and image data format as it found them."""
    import keras

    policy = keras.config.dtype_policy()
    data_format = keras.config.image_data_format()
    yield
    keras.config.set_dtype_policy(policy)
    keras.config.set_image_data_format(data_format)
