"""CSIM on real faces: dlib's recogniser (shipped weights) and an ArcFace ONNX model's plumbing."""

import math
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import torch

from splat_portrait.errors import SplatPortraitError
from splat_portrait.metrics import MetricOptions, build_metric
from splat_portrait.metrics.availability import MetricUnavailable
from splat_portrait.metrics.identity import (
    ARCFACE_SIZE,
    ARCFACE_TEMPLATE,
    ArcFaceEmbedder,
    DlibFaceEmbedder,
    align_arcface,
    csim,
    similarity_transform,
)

DATA = Path(__file__).parents[1] / ".." / "shared" / "data"
PORTRAITS = ("happy_256", "people_474", "art_640x896")  # three different people


@pytest.fixture(scope="module")
def portraits():
    if not (DATA / "portraits").is_dir():
        pytest.skip(f"real sample portraits not found at {DATA / 'portraits'}")
    from PIL import Image

    return {name: np.asarray(Image.open(DATA / "portraits" / f"{name}.png").convert("RGB")) for name in PORTRAITS}


@pytest.fixture(scope="module")
def dlib_embedder():
    return DlibFaceEmbedder()


def test_csim_of_a_face_with_itself_is_one(portraits, dlib_embedder):
    images = list(portraits.values())
    result = csim(dlib_embedder, images, images)
    assert result.value == pytest.approx(1.0, abs=1e-6)
    assert (result.scored, result.no_face, result.recognizer) == (3, 0, "dlib_face_recognition_resnet_model_v1")


def test_csim_of_different_people_is_clearly_lower(portraits, dlib_embedder):
    # Measured: about 0.88 (happy/people), 0.80 (happy/art), 0.80 (people/art); one person ~0.98.
    for a, b in combinations(PORTRAITS, 2):
        assert csim(dlib_embedder, [portraits[a]], [portraits[b]]).value < 0.93, (a, b)


def test_csim_of_one_person_in_two_video_frames_beats_different_people(portraits, dlib_embedder):
    video = DATA / "videos" / "hdtf_wda_aoc.mp4"
    if not video.is_file():
        pytest.skip(f"real sample video not found at {video}")
    from splat_portrait.media.video import read_frames

    frames = [frame for _, frame in zip(range(100), read_frames(video))]
    same = csim(dlib_embedder, [frames[0]], [frames[99]]).value
    others = csim(dlib_embedder, [portraits[name] for name in PORTRAITS], [frames[0]])
    assert same > 0.95 and others.scored == 3
    assert same > others.value + 0.05


def test_csim_counts_images_without_a_face_and_compares_with_one_reference(portraits, dlib_embedder):
    blank = np.full((128, 128, 3), 128, np.uint8)
    face = portraits["happy_256"]
    result = csim(dlib_embedder, [face, blank, face], [face])
    assert (result.value, result.scored, result.no_face) == (pytest.approx(1.0, abs=1e-6), 2, 1)
    nothing = csim(dlib_embedder, [blank], [blank])
    assert math.isnan(nothing.value) and (nothing.scored, nothing.no_face) == (0, 1)
    with pytest.raises(ValueError, match="compares 3 images with 2"):
        csim(dlib_embedder, [face, face, face], [face, face])


def test_csim_takes_float_batches_like_the_image_metrics(portraits, dlib_embedder):
    face = portraits["happy_256"]
    batch = torch.tensor(face).float().div(255)[None]
    from_tensor = csim(dlib_embedder, batch.permute(0, 3, 1, 2), [portraits["people_474"]]).value
    assert from_tensor == pytest.approx(csim(dlib_embedder, [face], [portraits["people_474"]]).value, abs=1e-9)


def test_registry_builds_csim_with_dlib_by_default(portraits):
    metric = build_metric("csim")
    assert metric.implementation == "dlib_face_recognition_resnet_model_v1"
    assert metric.compute([portraits["art_640x896"]], [portraits["art_640x896"]]).value == pytest.approx(1.0, abs=1e-6)


# ---------------------------------------------------------------- ArcFace


def test_similarity_transform_recovers_a_known_one():
    angle, scale, shift = 0.4, 1.7, np.array([12.0, -5.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = np.random.default_rng(0).uniform(0, 100, (5, 2))
    matrix = similarity_transform(src, src @ (scale * rotation).T + shift)
    assert np.allclose(matrix, np.hstack([scale * rotation, shift[:, None]]))


def test_arcface_alignment_puts_the_five_points_on_the_template():
    # Bright dots where a rotated, scaled template lands in a larger image must come back to the template.
    angle, scale, shift = -0.3, 2.5, np.array([70.0, 40.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = ARCFACE_TEMPLATE @ (scale * rotation).T + shift
    ys, xs = np.mgrid[0:400, 0:400]
    image = sum(np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 3.0**2)) for x, y in points)
    image = np.repeat((255 * image / image.max()).round().astype(np.uint8)[..., None], 3, axis=2)
    landmarks = np.zeros((68, 2))
    landmarks[36:42], landmarks[42:48], landmarks[30], landmarks[48], landmarks[54] = points
    crop = align_arcface(image, landmarks)[..., 0].astype(np.float64)
    assert crop.shape == (ARCFACE_SIZE, ARCFACE_SIZE)
    cy, cx = np.mgrid[0:ARCFACE_SIZE, 0:ARCFACE_SIZE]
    for x, y in ARCFACE_TEMPLATE:
        near = crop * ((cx - x) ** 2 + (cy - y) ** 2 < 4**2)
        centroid = np.array([(near * cx).sum(), (near * cy).sum()]) / near.sum()
        assert np.allclose(centroid, [x, y], atol=0.15)


def _tiny_arcface(path, input_shape=("N", 3, 112, 112), dim=16):
    """A stand-in recogniser: one fixed random projection of the aligned crop."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(0).standard_normal((3 * 112 * 112, dim)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input.1"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["embedding"])],
        "tiny_arcface",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", dim])],
        [numpy_helper.from_array(weights, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def test_arcface_embedder_runs_an_onnx_model_on_aligned_faces(portraits, tmp_path):
    embedder = ArcFaceEmbedder(_tiny_arcface(tmp_path / "w600k_r50.onnx"))
    assert embedder.name == "arcface:w600k_r50.onnx"
    images = [portraits["happy_256"], portraits["people_474"]]
    assert csim(embedder, images, images).value == pytest.approx(1.0, abs=1e-6)
    assert csim(embedder, images[:1], images[1:]).value < 0.99
    assert embedder.embed(np.zeros((64, 64, 3), np.uint8)) is None


def test_arcface_embedder_reports_missing_and_wrong_models(tmp_path):
    with pytest.raises(MetricUnavailable, match=r"CSIM \(ArcFace\) weights .*missing.onnx do not exist"):
        ArcFaceEmbedder(tmp_path / "missing.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    with pytest.raises(SplatPortraitError, match="bad.onnx is not a loadable ONNX model"):
        ArcFaceEmbedder(tmp_path / "bad.onnx")
    wrong = _tiny_arcface(tmp_path / "wrong.onnx", input_shape=("N", 3, 64, 196))
    with pytest.raises(SplatPortraitError, match=r"takes input \['N', 3, 64, 196\], not ArcFace's"):
        ArcFaceEmbedder(wrong)
    options = MetricOptions(face_recognizer="arcface", arcface_onnx=_tiny_arcface(tmp_path / "a.onnx"))
    metric = build_metric("csim", options)
    assert metric.implementation == "arcface:a.onnx"
