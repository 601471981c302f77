import json
import math
import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from splat_portrait.errors import SplatPortraitError
from splat_portrait.splats import PLY_PROPERTIES, SH_C0, Splats, read_ply

EXPECTED_HEADER = (
    "ply\nformat binary_little_endian 1.0\nelement vertex 2\n"
    + "".join(f"property float {p}\n" for p in PLY_PROPERTIES)
    + "end_header\n"
)


def make_splats(n: int = 4, batch: tuple[int, ...] = (), seed: int = 0) -> Splats:
    g = torch.Generator().manual_seed(seed)
    shape = (*batch, n)
    return Splats(
        means=torch.randn(*shape, 3, generator=g),
        quats=torch.nn.functional.normalize(torch.randn(*shape, 4, generator=g), dim=-1),
        scales=torch.rand(*shape, 3, generator=g) * 0.1 + 0.01,
        opacities=torch.rand(*shape, generator=g) * 0.9 + 0.05,
        colors=torch.rand(*shape, 3, generator=g),
    )


def two_hand_made_splats() -> Splats:
    return Splats(
        means=torch.tensor([[1.0, -2.0, 3.0], [0.0, 0.5, 2.5]]),
        quats=torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]),  # first is unnormalised on purpose
        scales=torch.tensor([[1.0, math.e, 0.5], [0.01, 0.02, 0.03]]),
        opacities=torch.tensor([0.5, 0.9]),
        colors=torch.tensor([[0.5, 1.0, 0.0], [0.25, 0.5, 0.75]]),
    )


def test_shape_validation_names_the_field():
    s = make_splats()
    with pytest.raises(ValueError, match=r"Splats.scales has shape \(4, 2\), expected \(4, 3\)"):
        Splats(s.means, s.quats, s.scales[:, :2], s.opacities, s.colors)


def test_batching_slicing_concatenation_and_to():
    s = make_splats(5, batch=(3,))
    assert s.batch_shape == (3,) and s.num_splats == 5 and len(s) == 3
    first = s[0]
    assert first.batch_shape == () and torch.equal(first.means, s.means[0])
    assert s[1:].batch_shape == (2,)
    kept = first[first.opacities > 0.5]
    assert kept.num_splats == int((first.opacities > 0.5).sum())
    joined = Splats.cat([s, s], dim=-1)
    assert joined.batch_shape == (3,) and joined.num_splats == 10
    stacked = Splats.cat([s, s[:1]], dim=0)
    assert stacked.batch_shape == (4,)
    assert s.to(torch.float64).dtype == torch.float64
    with pytest.raises(ValueError, match="out of range"):
        Splats.cat([s], dim=2)


def test_ply_header_is_the_inria_layout(tmp_path):
    path = tmp_path / "two.ply"
    two_hand_made_splats().save_ply(path)
    data = path.read_bytes()
    header_end = data.index(b"end_header\n") + len(b"end_header\n")
    assert data[:header_end].decode("ascii") == EXPECTED_HEADER
    assert len(data) - header_end == 2 * len(PLY_PROPERTIES) * 4


def test_every_ply_property_is_encoded_as_3dgs_expects(tmp_path):
    path = tmp_path / "two.ply"
    two_hand_made_splats().save_ply(path)
    data = path.read_bytes()
    body = data[data.index(b"end_header\n") + len(b"end_header\n") :]
    rows = [struct.unpack("<17f", body[i * 68 : (i + 1) * 68]) for i in range(2)]
    values = [dict(zip(PLY_PROPERTIES, row)) for row in rows]
    first, second = values
    assert (first["x"], first["y"], first["z"]) == (1.0, -2.0, 3.0)
    assert (first["nx"], first["ny"], first["nz"]) == (0.0, 0.0, 0.0)
    # colour 0.5 -> SH DC 0; colour 1 -> 0.5 / C0; colour 0 -> -0.5 / C0
    assert first["f_dc_0"] == pytest.approx(0.0)
    assert first["f_dc_1"] == pytest.approx(0.5 / 0.28209479177387814, rel=1e-6)
    assert first["f_dc_2"] == pytest.approx(-0.5 / 0.28209479177387814, rel=1e-6)
    # opacity as logit: logit(0.5) = 0, logit(0.9) = ln 9
    assert first["opacity"] == pytest.approx(0.0, abs=1e-7)
    assert second["opacity"] == pytest.approx(math.log(9.0), rel=1e-6)
    # scale as natural log
    assert (first["scale_0"], first["scale_1"], first["scale_2"]) == pytest.approx((0.0, 1.0, math.log(0.5)), rel=1e-6)
    # rotation wxyz, normalised
    assert (first["rot_0"], first["rot_1"], first["rot_2"], first["rot_3"]) == (1.0, 0.0, 0.0, 0.0)
    assert (second["rot_0"], second["rot_3"]) == (0.0, 1.0)


def test_ply_round_trip(tmp_path):
    s = make_splats(100, seed=3)
    path = tmp_path / "cloud.ply"
    assert s.save_ply(path) == 0
    back = read_ply(path)
    assert back.num_splats == 100
    for name in ("means", "quats", "scales", "opacities", "colors"):
        assert torch.allclose(getattr(back, name), getattr(s, name), atol=1e-5, rtol=1e-5), name


def test_non_finite_splats_are_dropped_and_counted(tmp_path, caplog):
    s = make_splats(6)
    s.means[1, 0] = float("nan")
    s.scales[3, 2] = float("inf")
    s.opacities[4] = 0.0  # logit would be -inf
    path = tmp_path / "dirty.ply"
    assert s.save_ply(path) == 3
    assert "dropped 3 of 6 splats" in caplog.text
    back = read_ply(path)
    assert back.num_splats == 3
    assert torch.allclose(back.means, s.means[[0, 2, 5]], atol=1e-6)


def test_batched_splats_cannot_be_written_as_one_ply(tmp_path):
    with pytest.raises(ValueError, match="a .ply holds one cloud"):
        make_splats(3, batch=(2,)).save_ply(tmp_path / "x.ply")


def test_reads_ply_from_other_tools_with_extra_properties(tmp_path):
    # An INRIA training output carries normals and 45 f_rest_* coefficients; we use the DC term only.
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(45)] + ["opacity", "scale_0", "scale_1", "scale_2"]
    names += ["rot_0", "rot_1", "rot_2", "rot_3"]
    rec = np.zeros(1, dtype=[(n, "<f4") for n in names])
    rec["x"], rec["f_dc_0"], rec["opacity"], rec["scale_1"], rec["rot_0"] = 0.25, 1.0, 2.0, -1.0, 3.0
    header = "ply\nformat binary_little_endian 1.0\ncomment made elsewhere\nelement vertex 1\n"
    header += "".join(f"property float {n}\n" for n in names) + "end_header\n"
    path = tmp_path / "inria.ply"
    path.write_bytes(header.encode() + rec.tobytes())
    s = read_ply(path)
    assert s.means[0].tolist() == [0.25, 0.0, 0.0]
    assert s.colors[0, 0].item() == pytest.approx(0.5 + SH_C0)
    assert s.opacities[0].item() == pytest.approx(1 / (1 + math.exp(-2)))
    assert s.scales[0].tolist() == pytest.approx([1.0, math.exp(-1), 1.0])
    assert s.quats[0].tolist() == [1.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"hello", "is not a PLY file"),
        (b"ply\nformat ascii 1.0\nelement vertex 1\nend_header\n", "only binary_little_endian"),
        (b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float x\nend_header\n\0\0\0\0", "missing properties"),
        (EXPECTED_HEADER.encode() + b"\0" * 10, "truncated"),
    ],
)
def test_bad_ply_files_give_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.ply"
    path.write_bytes(content)
    with pytest.raises(SplatPortraitError, match=message):
        read_ply(path)


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    class FailsAfterHeader:
        def __len__(self):
            return 1

        def tobytes(self):
            raise RuntimeError("disk full")

    monkeypatch.setattr("splat_portrait.splats.encode_ply_vertices", lambda s: (FailsAfterHeader(), 0))
    with pytest.raises(RuntimeError, match="disk full"):
        make_splats().save_ply(tmp_path / "never.ply")
    assert os.listdir(tmp_path) == []


def _splat_transform() -> str | None:
    local = Path(__file__).parents[1] / ".tools" / "node_modules" / ".bin" / "splat-transform"
    return str(local) if local.exists() else shutil.which("splat-transform")


@pytest.mark.skipif(_splat_transform() is None, reason="PlayCanvas splat-transform not installed (make install adds it when npm exists)")
def test_external_3dgs_tool_reads_our_ply_as_gaussians(tmp_path):
    s = make_splats(50)
    ours, theirs = tmp_path / "ours.ply", tmp_path / "theirs.ply"
    s.save_ply(ours)
    out = subprocess.run([_splat_transform(), "-q", str(ours), "--info", "json", "null"], capture_output=True, text=True, timeout=120)
    info = json.loads(out.stdout[out.stdout.index("{") :])
    assert info["gaussian"] is True and info["numGaussians"] == 50
    # Re-encoded by the external tool (it reorders the properties), our reader gets the same Gaussians back.
    subprocess.run([_splat_transform(), "-q", str(ours), str(theirs)], check=True, capture_output=True, timeout=120)
    back = read_ply(theirs)
    for name in ("means", "quats", "scales", "opacities", "colors"):
        assert torch.allclose(getattr(back, name), getattr(s, name), atol=1e-5), name
