"""TFLite Model Metadata for MediaPipe's ImageSegmenter (and any reader of the TFLite metadata schema):
the class names and the output's activation inside the .tflite file, written without tflite-support or
mediapipe (mediapipe 1.2.3's metadata_writers does not import: its compiled mediapipe.tasks.cc module is
missing from the wheel; tflite-support's last release needs libusb and dates from 2023).

    data = add_segmenter_metadata(tflite_bytes, labels=["Sky", "Building", ...], image_size=(360, 480))

What it writes (the layout of mediapipe's metadata_writers.image_segmenter and of TF Lite Support's
MetadataPopulator, schema tensorflow/lite/schema metadata_schema.fbs 1.5.0):
- a ModelMetadata flatbuffer (file identifier "M001") in a buffer of the model, named by a
  `Model.metadata` entry "TFLITE_METADATA": one subgraph, the input tensor described as an RGB
  image (with NormalizationOptions mean/std when `normalization` is given: a float32 input needs
  them in MediaPipe, a uint8 input does not), the output tensor with a TENSOR_AXIS_LABELS
  associated file "labels.txt", and the custom metadata "SEGMENTER_METADATA" (an
  ImageSegmenterOptions flatbuffer, identifier "V001") naming the output's activation, so
  MediaPipe's confidence masks are probabilities (SOFTMAX) rather than raw logits (NONE);
- labels.txt (one label per line) in an uncompressed zip appended to the model file. TF Lite
  interpreters ignore bytes after the flatbuffer; MediaPipe reads the zip from the end.

Needs only `flatbuffers` and TensorFlow's generated TFLite schema (tensorflow.lite.python.
schema_py_generated, also in ai_edge_litert as ai_edge_litert.schema_py_generated) to rewrite the
model's buffer list. The field slots below follow the table field order in metadata_schema.fbs;
a union field takes two slots (type, value).
"""

from __future__ import annotations

import io
import zipfile

import flatbuffers
import numpy as np

from tensorflow.lite.python import schema_py_generated as schema

from segkit.inference.tflite_runtime import LABELS_FILE, pack

METADATA_NAME = "TFLITE_METADATA"
ACTIVATIONS = {"NONE": 0, "SIGMOID": 1, "SOFTMAX": 2}  # mediapipe.tasks.Activation
_TENSOR_AXIS_LABELS = 2  # AssociatedFileType
_IMAGE_PROPERTIES = 2  # ContentProperties union member
_NORMALIZATION_OPTIONS = 1  # ProcessUnitOptions union member
_RGB = 1  # ColorSpaceType


def _table(b: flatbuffers.Builder, fields: list) -> int:
    """A table from [(slot, kind, value)], kind "off" (an offset), "u8"/"i8" (a byte) or "u32"."""
    b.StartObject(max(slot for slot, _, _ in fields) + 1)
    for slot, kind, value in fields:
        if value is None:
            continue
        if kind == "off":
            b.PrependUOffsetTRelativeSlot(slot, value, 0)
        elif kind == "u8":
            b.PrependUint8Slot(slot, value, 0)
        elif kind == "i8":
            b.PrependInt8Slot(slot, value, 0)
        elif kind == "u32":
            b.PrependUint32Slot(slot, value, 0)
    return b.EndObject()


def _offsets(b: flatbuffers.Builder, offsets: list) -> int:
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _floats(b: flatbuffers.Builder, values) -> int:
    b.StartVector(4, len(values), 4)
    for v in reversed(values):
        b.PrependFloat32(float(v))
    return b.EndVector()


def _segmenter_options(activation: str) -> bytes:
    """The ImageSegmenterOptions flatbuffer of image_segmenter_metadata_schema.fbs."""
    b = flatbuffers.Builder(64)
    version = b.CreateString("1.0.0")
    b.Finish(_table(b, [(0, "i8", ACTIVATIONS[activation]), (1, "off", version)]), file_identifier=b"V001")
    return bytes(b.Output())


def metadata_buffer(num_classes: int, *, name: str, description: str = "", version: str = "",
                    author: str = "", license: str = "", activation: str = "SOFTMAX",
                    normalization: tuple | None = None, image_size: tuple | None = None) -> bytes:
    """The ModelMetadata flatbuffer. normalization: (mean, std) per channel lists, for a float input
    (MediaPipe feeds (pixel - mean) / std); image_size: (H, W) of the input, informative."""
    b = flatbuffers.Builder(1024)
    s = b.CreateString
    # Input tensor: an RGB image, optionally with its normalization.
    size = _table(b, [(0, "u32", image_size[1]), (1, "u32", image_size[0])]) if image_size else None
    image_props = _table(b, [(0, "i8", _RGB), (1, "off", size)])
    content_in = _table(b, [(0, "u8", _IMAGE_PROPERTIES), (1, "off", image_props)])
    units = None
    if normalization is not None:
        mean, std = _floats(b, normalization[0]), _floats(b, normalization[1])
        norm = _table(b, [(0, "off", mean), (1, "off", std)])
        units = _offsets(b, [_table(b, [(0, "u8", _NORMALIZATION_OPTIONS), (1, "off", norm)])])
    input_name, input_desc = s("image"), s("Input image, RGB.")
    tensor_in = _table(b, [(0, "off", input_name), (1, "off", input_desc), (3, "off", content_in), (4, "off", units)])
    # Output tensor: per-class scores, labels in an associated file.
    file_name, file_desc = s(LABELS_FILE), s("Class names, one per line: line i names output channel i.")
    labels = _table(b, [(0, "off", file_name), (1, "off", file_desc), (2, "i8", _TENSOR_AXIS_LABELS)])
    files = _offsets(b, [labels])
    image_props_out = _table(b, [(0, "i8", 0)])  # MediaPipe's own writer marks the mask as an image
    content_out = _table(b, [(0, "u8", _IMAGE_PROPERTIES), (1, "off", image_props_out)])
    output_name = s("segmentation_masks")
    output_desc = s(f"Per-pixel scores (activation {activation}) of the {num_classes} classes.")
    tensor_out = _table(b, [(0, "off", output_name), (1, "off", output_desc), (3, "off", content_out),
                            (6, "off", files)])
    # Custom metadata: the output activation, read by MediaPipe's ImageSegmenterGraph.
    payload = _segmenter_options(activation)
    custom_name = s("SEGMENTER_METADATA")
    b.StartVector(1, len(payload), 16)  # data:[ubyte] (force_align: 16)
    for byte in reversed(payload):
        b.PrependUint8(byte)
    custom_data = b.EndVector()
    custom = _offsets(b, [_table(b, [(0, "off", custom_name), (1, "off", custom_data)])])
    subgraph = _table(b, [(2, "off", _offsets(b, [tensor_in])), (3, "off", _offsets(b, [tensor_out])),
                          (9, "off", custom)])
    fields = [(0, "off", s(name)), (1, "off", s(description) if description else None),
              (2, "off", s(version) if version else None), (3, "off", _offsets(b, [subgraph])),
              (4, "off", s(author) if author else None), (5, "off", s(license) if license else None),
              (7, "off", s("1.5.0"))]  # min_parser_version: custom_metadata is a 1.5.0 field
    b.Finish(_table(b, fields), file_identifier=b"M001")
    return bytes(b.Output())


def strip_associated_files(model: bytes) -> bytes:
    """The flatbuffer alone, without a zip appended by an earlier run."""
    try:
        with zipfile.ZipFile(io.BytesIO(model)) as zf:
            first = min(info.header_offset for info in zf.infolist()) if zf.infolist() else None
    except zipfile.BadZipFile:
        return model
    return model if first is None else model[:first]


def add_segmenter_metadata(model: bytes, labels: list, **options) -> bytes:
    """`model` (a .tflite file's bytes) with segmenter metadata and labels; replaces earlier metadata.
    options: those of metadata_buffer (name defaults to "segmentation")."""
    model = strip_associated_files(model)
    tree = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model, 0))
    if any(getattr(buffer, "offset", 0) for buffer in tree.buffers or []):
        raise ValueError("the model keeps its buffers outside the flatbuffer (> 2 GB); not supported")
    output = tree.subgraphs[0].tensors[tree.subgraphs[0].outputs[-1]]
    num_classes = int(output.shape[-1])
    if len(labels) != num_classes:
        raise ValueError(f"{len(labels)} labels for {num_classes} output channels")
    options.setdefault("name", "segmentation")
    data = metadata_buffer(num_classes, **options)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(data, np.uint8)
    tree.metadata = tree.metadata or []
    entry = next((m for m in tree.metadata if m.name in (METADATA_NAME, METADATA_NAME.encode())), None)
    if entry is not None:  # replace the earlier metadata in its buffer
        tree.buffers[entry.buffer] = buffer
    else:
        tree.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name, entry.buffer = METADATA_NAME, len(tree.buffers) - 1
        tree.metadata.append(entry)
    return append_labels(pack(tree, len(model) + len(data)), labels)


def append_labels(model: bytes, labels: list) -> bytes:
    """The flatbuffer `model` with labels.txt in an uncompressed zip appended, where MediaPipe reads it."""
    out = io.BytesIO(model)
    out.seek(0, io.SEEK_END)
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(LABELS_FILE, "".join(f"{label}\n" for label in labels))
    return out.getvalue()
