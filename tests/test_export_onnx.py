"""ONNX export: dynamic batch, CXR normalisation inside the graph, ONNX Runtime == PyTorch."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from cxrkit.export import native, onnx_format
from cxrkit.io import bundled
from cxrkit.models.tower_configs import VisionConfig
from cxrkit.models.vision import build_vision_encoder


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(2)
    cfg = VisionConfig(arch="vit_tiny_patch16_224", image_size=64, patch_size=16, depth=2)
    return build_vision_encoder(cfg).eval()


@pytest.fixture(scope="module")
def float_graph(encoder, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "float.onnx"
    return onnx_format.export_onnx(encoder, path, 64, 1, 0.5, 0.5, "float32")


@pytest.fixture(scope="module")
def uint8_graph(encoder, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "uint8.onnx"
    return onnx_format.export_onnx(encoder, path, 64, 1, 0.5, 0.5, "uint8")


@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_runtime_matches_pytorch_for_any_batch(float_graph, encoder, batch):
    images = native.probe_images(64, batch=batch, seed=batch)
    result = onnx_format.verify(float_graph, encoder, images, 0.5, 0.5, "float32")
    print(f"ONNX float32 input, batch {batch}: max abs diff {result['max_abs_diff']:.3g}")
    assert result["max_abs_diff"] <= 1e-4
    assert result["batch_checked"] == batch


def test_graph_input_has_a_dynamic_batch_axis(float_graph):
    (graph_input,) = ort.InferenceSession(str(float_graph)).get_inputs()
    assert graph_input.name == "image"
    assert graph_input.shape[0] == "batch" and graph_input.shape[1:] == [1, 64, 64]


@torch.no_grad()
def test_uint8_input_is_scaled_and_normalised_inside_the_graph(uint8_graph, encoder):
    session = ort.InferenceSession(str(uint8_graph))
    white = np.full((1, 1, 64, 64), 255, dtype=np.uint8)
    black = np.zeros((1, 1, 64, 64), dtype=np.uint8)
    # hand-computed: 255 -> 1.0 -> (1 - 0.5) / 0.5 = +1; 0 -> -1
    (white_out,) = session.run(["embedding"], {"image": white})
    (black_out,) = session.run(["embedding"], {"image": black})
    expected_white = encoder(torch.ones(1, 1, 64, 64))
    expected_black = encoder(-torch.ones(1, 1, 64, 64))
    assert native.max_abs_diff(torch.from_numpy(white_out), expected_white) <= 1e-4
    assert native.max_abs_diff(torch.from_numpy(black_out), expected_black) <= 1e-4


def test_real_radiograph_gives_the_same_features(uint8_graph, encoder):
    # a real pediatric chest X-ray, resized with antialiasing outside the graph (as documented)
    path = bundled.pediatric_jpegs()[0]
    with Image.open(path) as image:
        small = image.convert("L").resize((64, 64), Image.BILINEAR, reducing_gap=2.0)
    images01 = torch.from_numpy(np.asarray(small, dtype=np.float32) / 255.0)[None, None]
    result = onnx_format.verify(uint8_graph, encoder, images01, 0.5, 0.5, "uint8")
    print(f"ONNX uint8 input, real radiograph: max abs diff {result['max_abs_diff']:.3g}")
    assert result["max_abs_diff"] <= 1e-4


def test_graph_outputs_pooled_embedding_and_tokens(float_graph):
    session = ort.InferenceSession(str(float_graph))
    embedding, tokens = session.run(None, {"image": np.zeros((2, 1, 64, 64), np.float32)})
    # vit_tiny: width 192; 1 class token + (64 / 16)^2 = 16 patches
    assert embedding.shape == (2, 192) and tokens.shape == (2, 17, 192)
