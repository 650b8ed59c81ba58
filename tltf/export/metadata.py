"""TFLite metadata that a phone app reads: input normalization, image properties, labels.

The schema is the TFLite metadata schema as shipped by MediaPipe (`pip install mediapipe`,
or `pip install tltf[mediapipe]`): tltf builds the metadata with MediaPipe's own
`metadata_writers.metadata_info` classes, the ones its `ImageClassifier` writer uses, so
MediaPipe Tasks' `ImageClassifier` loads the file and returns tltf's class names with no extra
code. The labels travel inside the file (a zip appended to the flatbuffer, as the schema
specifies) and in a `labels.txt` beside it.

Writing the metadata into the model is done here rather than with MediaPipe's
`MetadataPopulator`, whose module fails to import in the current MediaPipe wheels (it needs a
compiled `mediapipe.tasks.cc` extension they no longer ship); the result is the same bytes
layout: a `TFLITE_METADATA` buffer plus the associated files.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence

__all__ = ["read_metadata", "write_metadata"]

_METADATA_FIELD = "TFLITE_METADATA"
_LABELS_FILE = "labels.txt"
# Every field tltf writes exists since metadata parser version 1.0.0.
_MIN_PARSER_VERSION = "1.0.0"


def _schema():
    try:
        from mediapipe.tasks.metadata import metadata_schema_py_generated as metadata_fb
        from mediapipe.tasks.metadata import schema_py_generated as schema_fb
        from mediapipe.tasks.python.metadata.metadata_writers import metadata_info
    except ImportError as error:
        raise ImportError(
            "Writing TFLite metadata needs the `mediapipe` package (its metadata schema). "
            "Install it with `pip install tltf[mediapipe]` (or `pip install mediapipe`), or "
            f"pass `metadata=False`. Received: ImportError: {error}"
        ) from error
    return metadata_fb, schema_fb, metadata_info


def metadata_available() -> bool:
    """Returns True if the metadata schema (the `mediapipe` package) can be imported."""
    try:
        _schema()
    except ImportError:
        return False
    return True


def write_metadata(
    model_content: bytes,
    class_names: Sequence[str],
    *,
    name: str = "tltf image classifier",
    description: str = "Image classifier exported by tltf; takes raw RGB pixels in [0, 255].",
    version: str | None = None,
) -> bytes:
    """Returns `model_content` with image-classifier metadata and its labels embedded.

    The input is described as an RGB image of raw pixels: normalization mean 0 and std 1
    (preprocessing is inside the model), which tells MediaPipe to feed pixel values as they
    are. The output is described as class scores with `labels.txt` attached as its
    `TENSOR_AXIS_LABELS` file.

    Args:
        model_content: bytes. A `.tflite` flatbuffer with one image input and one output.
        class_names: sequence of str. One name per output class, in label order.
        name: str. Model name recorded in the metadata.
        description: str. Model description recorded in the metadata.
        version: str or None. Model version recorded in the metadata.

    Returns:
        bytes. The new `.tflite` content.

    Raises:
        ImportError: if `mediapipe` (the metadata schema) is not installed.
        ValueError: if the number of class names differs from the output width.

    Example:

    >>> import os, tempfile
    >>> from tltf import build_classifier
    >>> from tltf.export.tflite import export_tflite
    >>> model = build_classifier("mobilenet_v2", 2, image_size=32, weights=None)
    >>> path = os.path.join(tempfile.mkdtemp(), "m.tflite")
    >>> _ = export_tflite(model, path, metadata=False, class_names=["0", "1"])
    >>> content = write_metadata(open(path, "rb").read(), ["cat", "dog"])
    >>> read_metadata(content)["labels"]
    ['cat', 'dog']
    """
    import flatbuffers

    metadata_fb, schema_fb, metadata_info = _schema()
    model = schema_fb.Model.GetRootAsModel(model_content, 0)
    subgraph = model.Subgraphs(0)
    input_tensor = subgraph.Tensors(subgraph.Inputs(0))
    output_tensor = subgraph.Tensors(subgraph.Outputs(0))
    num_outputs = int(output_tensor.ShapeAsNumpy()[-1])
    if len(class_names) != num_outputs:
        raise ValueError(
            f"The model has {num_outputs} outputs but {len(class_names)} class names were "
            f"given; pass one name per class. Received: class_names={list(class_names)!r}"
        )
    input_type = input_tensor.Type()
    is_float = input_type == schema_fb.TensorType.FLOAT32
    image_md = metadata_info.InputImageTensorMd(
        name="image",
        description="RGB image, raw pixel values in [0, 255] (preprocessing is in the model).",
        norm_mean=[0.0] if is_float else None,
        norm_std=[1.0] if is_float else None,
        color_space_type=metadata_fb.ColorSpaceType.RGB,
        tensor_type=input_type,
    )
    scores_md = metadata_info.ClassificationTensorMd(
        name="scores",
        description="Scores of the classes listed in labels.txt.",
        label_files=[metadata_info.LabelFileMd(_LABELS_FILE)],
        tensor_type=output_tensor.Type(),
    )
    subgraph_md = metadata_fb.SubGraphMetadataT()
    subgraph_md.inputTensorMetadata = [image_md.create_metadata()]
    subgraph_md.outputTensorMetadata = [scores_md.create_metadata()]
    model_md = metadata_info.GeneralMd(name=name, description=description,
                                       version=version).create_metadata()
    model_md.subgraphMetadata = [subgraph_md]
    model_md.minParserVersion = _MIN_PARSER_VERSION
    builder = flatbuffers.Builder(0)
    builder.Finish(model_md.Pack(builder), b"M001")
    metadata_buffer = builder.Output()

    model_t = schema_fb.ModelT.InitFromObj(model)
    buffer_t = schema_fb.BufferT()
    buffer_t.data = metadata_buffer
    model_t.buffers = list(model_t.buffers or []) + [buffer_t]
    field = schema_fb.MetadataT()
    field.name = _METADATA_FIELD
    field.buffer = len(model_t.buffers) - 1
    model_t.metadata = [m for m in (model_t.metadata or [])
                        if _decode(m.name) != _METADATA_FIELD] + [field]
    builder = flatbuffers.Builder(0)
    builder.Finish(model_t.Pack(builder), b"TFL3")

    packed = io.BytesIO()
    packed.write(builder.Output())
    with zipfile.ZipFile(packed, "a") as archive:
        # Joined without a trailing newline, as MediaPipe's own writer does.
        archive.writestr(_LABELS_FILE, "\n".join(str(n) for n in class_names))
    return packed.getvalue()


def read_metadata(model_content: bytes) -> dict | None:
    """Reads back the metadata tltf writes: names, normalization, labels.

    Args:
        model_content: bytes. A `.tflite` file's content.

    Returns:
        A dict with `name`, `description`, `min_parser_version`, `norm_mean`, `norm_std`,
        `color_space` (`"RGB"`...), `associated_files` and `labels` (the class names of the
        embedded label file), or None if the file has no metadata.

    Raises:
        ImportError: if `mediapipe` (the metadata schema) is not installed.

    Example:

    >>> import os, tempfile
    >>> from tltf import build_classifier
    >>> from tltf.export.tflite import export_tflite
    >>> model = build_classifier("mobilenet_v2", 2, image_size=32, weights=None,
    ...                          class_names=["cat", "dog"])
    >>> path = os.path.join(tempfile.mkdtemp(), "m.tflite")
    >>> _ = export_tflite(model, path, metadata=True)
    >>> read_metadata(open(path, "rb").read())["labels"]
    ['cat', 'dog']
    """
    metadata_fb, schema_fb, _ = _schema()
    model = schema_fb.Model.GetRootAsModel(model_content, 0)
    raw = None
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if _decode(entry.Name()) == _METADATA_FIELD:
            raw = model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
    if raw is None:
        return None
    md = metadata_fb.ModelMetadataT.InitFromObj(metadata_fb.ModelMetadata.GetRootAsModelMetadata(raw, 0))
    image = md.subgraphMetadata[0].inputTensorMetadata[0]
    scores = md.subgraphMetadata[0].outputTensorMetadata[0]
    norm = next((u.options for u in image.processUnits or []
                 if u.optionsType == metadata_fb.ProcessUnitOptions.NormalizationOptions), None)
    spaces = {v: k for k, v in vars(metadata_fb.ColorSpaceType).items() if not k.startswith("_")}
    files = [_decode(f.name) for f in scores.associatedFiles or []]
    with zipfile.ZipFile(io.BytesIO(model_content)) as archive:
        packed = {n: archive.read(n).decode("utf-8") for n in archive.namelist()}
    labels_name = next((f for f in files if f in packed), None)
    return {
        "name": _decode(md.name),
        "description": _decode(md.description),
        "min_parser_version": _decode(md.minParserVersion),
        "norm_mean": None if norm is None else [float(v) for v in norm.mean],
        "norm_std": None if norm is None else [float(v) for v in norm.std],
        "color_space": spaces.get(image.content.contentProperties.colorSpace),
        "associated_files": sorted(packed),
        "labels": None if labels_name is None else packed[labels_name].splitlines(),
    }


def labels_text(class_names: Sequence[str]) -> str:
    """One class name per line, in label order (the `labels.txt` format)."""
    return "\n".join(str(n) for n in class_names) + "\n"


def _decode(value) -> str | None:
    return value.decode("utf-8") if isinstance(value, bytes) else value
