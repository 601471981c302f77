import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import splat_portrait.models as models
from splat_portrait import camera
from splat_portrait.models import PRESETS, GaussianMaps, ModelConfig, TalkingHead, preset, to_splats
from splat_portrait.models.audio import AudioAttNet, AudioEncoder, AudioNet, time_delta_embedding
from splat_portrait.models.config import AudioConfig, GeneratorConfig, UNetConfig
from splat_portrait.models.generator import ATTRIBUTE_CHANNELS, ATTRIBUTES, attribute_slice
from splat_portrait.render import render

S = 64


def tiny_model(seed: int = 0, **overrides) -> TalkingHead:
    torch.manual_seed(seed)
    return TalkingHead(preset("tiny", **overrides))


def inputs(batch: int = 2, size: int = S, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, 3, size, size, generator=gen) * 2 - 1
    return image, camera.default_c2w((batch,)), camera.default_intrinsics((batch,))


def audio_inputs(batch: int, dim: int = 80, seed: int = 2):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 8, 16, dim, generator=gen), torch.rand(batch, generator=gen) * 3


def wake_dynamic_decoder(model: TalkingHead, seed: int = 3) -> None:
    """Give the zero-initialised last layer weights, as training would, so audio/time reach the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.dynamic.conv_out.weight.copy_(torch.randn(model.dynamic.conv_out.weight.shape, generator=gen) * 0.1)


def pixel_size(depth: torch.Tensor, intrinsics: torch.Tensor, width: int) -> torch.Tensor:
    return depth / (intrinsics[:, 0, None, None, None] * width)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return -10 * math.log10(F.mse_loss(a, b).item())


# --- heads: shapes and value ranges -----------------------------------------------------------


def test_untrained_heads_have_the_designed_initial_values():
    model = tiny_model()
    image, c2w, intrinsics = inputs()
    with torch.no_grad():
        enc = model.encode(image, c2w, intrinsics)
    cfg = model.config.generator
    maps = enc.maps
    shapes = {"opacity": 1, "scale": 3, "depth": 1, "offset": 3, "rotation": 4, "color": 3}
    for name, channels in shapes.items():
        assert getattr(maps, name).shape == (2, channels, S, S), name
    assert enc.attributes.shape == (2, ATTRIBUTE_CHANNELS, S, S)
    assert enc.background.shape == (2, 3, S, S)
    assert enc.background_hwc.shape == (2, S, S, 3)

    assert torch.allclose(maps.opacity, torch.full_like(maps.opacity, cfg.opacity_init), atol=0.01)
    assert torch.allclose(maps.depth, torch.full_like(maps.depth, cfg.depth_init), atol=0.05)
    # About one pixel: scale_init_px (0.4) pixels at the splat's own depth.
    ratio = maps.scale / pixel_size(maps.depth, intrinsics, S)
    assert torch.allclose(ratio, torch.full_like(ratio, cfg.scale_init_px), rtol=0.05)
    assert maps.offset.abs().max() < 0.01
    identity = torch.tensor([1.0, 0, 0, 0])[None, :, None, None]
    assert (maps.rotation - identity).abs().max() < 0.05
    # Colours are the input pixels (clamped away from 0/1 by color_clamp) plus a tiny head output.
    expected = ((image + 1) / 2).clamp(cfg.color_clamp, 1 - cfg.color_clamp)
    assert (maps.color - expected).abs().max() < 0.01
    assert (enc.background - 0.5).abs().max() < 0.05


def test_heads_stay_in_range_for_extreme_network_outputs():
    model = tiny_model()
    with torch.no_grad():
        model.generator.unet.conv_out.weight.mul_(1e4)
        model.dynamic.conv_out.weight.fill_(10.0)
    image, c2w, intrinsics = inputs()
    with torch.no_grad():
        enc = model.encode(image, c2w, intrinsics)
        offsets = model.dynamic_offsets(enc.features, *audio_inputs(2))
    cfg = model.config.generator
    maps = enc.maps
    assert torch.isfinite(enc.attributes).all() and torch.isfinite(enc.background).all()
    assert maps.opacity.min() >= 0 and maps.opacity.max() <= 1
    assert maps.depth.min() >= cfg.z_near and maps.depth.max() <= cfg.z_far
    assert maps.offset.abs().max() <= cfg.max_static_offset
    assert maps.color.min() >= 0 and maps.color.max() <= 1
    assert enc.background.min() >= 0 and enc.background.max() <= 1
    assert torch.allclose(maps.rotation.norm(dim=1), torch.ones(2, S, S), atol=1e-5)
    ratio = maps.scale / (pixel_size(maps.depth, intrinsics, S) * cfg.scale_init_px)
    bound = math.exp(cfg.scale_log_range)
    assert ratio.min() >= 1 / bound * 0.999 and ratio.max() <= bound * 1.001
    # The extremes are actually reached, so the bounds above were exercised.
    assert maps.depth.max() > cfg.z_far - 0.01 and maps.offset.abs().max() > 0.99 * cfg.max_static_offset
    assert offsets.abs().max() <= model.config.dynamic.max_offset
    assert offsets.abs().max() > 0.99 * model.config.dynamic.max_offset


def test_scale_follows_the_pixel_footprint_of_any_camera():
    model = tiny_model()
    image, c2w, _ = inputs(batch=2)
    intrinsics = torch.tensor([[4.2647, 4.2647, 0.5, 0.5], [2.0, 2.0, 0.5, 0.5]])
    with torch.no_grad():
        maps = model.encode(image, c2w, intrinsics).maps
    ratio = maps.scale / pixel_size(maps.depth, intrinsics, S)
    assert torch.allclose(ratio, torch.full_like(ratio, 0.4), rtol=0.05)
    # A wider field of view means bigger pixels, hence bigger splats.
    assert maps.scale[1].mean() > 2 * maps.scale[0].mean()


def test_decoder_features_are_coarsest_first_with_the_advertised_channels():
    model = tiny_model()
    with torch.no_grad():
        enc = model.encode(*inputs(batch=1))
    unet = model.config.generator.unet
    sizes = [unet.image_size >> level for level in reversed(range(len(unet.channel_mults)))]
    assert [tuple(f.shape) for f in enc.features] == [
        (1, c, s, s) for c, s in zip(model.generator.feature_channels, sizes)
    ]
    assert model.generator.feature_channels == unet.level_channels()[::-1]


def test_encode_rejects_images_of_the_wrong_size():
    model = tiny_model()
    image, c2w, intrinsics = inputs(size=32)
    with pytest.raises(ValueError, match=re.escape("expected images of shape (B, 3, 64, 64), got (2, 3, 32, 32)")):
        model.encode(image, c2w, intrinsics)


# --- splats -------------------------------------------------------------------------------------


def test_attribute_slices_name_the_channels_the_maps_split_into():
    attributes = torch.arange(ATTRIBUTE_CHANNELS, dtype=torch.float32)[None, :, None, None]
    maps = GaussianMaps.from_attributes(attributes)
    assert attribute_slice("rotation") == slice(8, 12) and attribute_slice("color") == slice(12, 15)
    for name, _ in ATTRIBUTES:
        assert torch.equal(getattr(maps, name), attributes[:, attribute_slice(name)])
    with pytest.raises(KeyError, match="no generator attribute 'alpha'; they are opacity, scale, depth, offset, rotation, color"):
        attribute_slice("alpha")


def test_to_splats_puts_each_gaussian_on_its_pixel_ray_at_its_depth():
    b, h, w = 2, 4, 6
    gen = torch.Generator().manual_seed(0)
    attributes = torch.rand(b, ATTRIBUTE_CHANNELS, h, w, generator=gen)
    maps = GaussianMaps.from_attributes(attributes)
    maps.depth.mul_(0).add_(2 + torch.rand(b, 1, h, w, generator=gen))
    maps.offset.zero_()
    intrinsics = torch.tensor([[3.0, 3.0, 0.5, 0.5], [2.0, 2.5, 0.4, 0.6]])
    splats = to_splats(attributes, intrinsics)
    assert splats.batch_shape == (b,) and splats.num_splats == h * w
    # Splat k is pixel (k // w, k % w); projecting it lands on that pixel's centre, at its depth.
    K = camera.intrinsics_to_K(intrinsics, w, h)
    proj = splats.means @ K.transpose(1, 2)
    uv = proj[..., :2] / proj[..., 2:]
    v, u = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    assert torch.allclose(uv, torch.stack([u, v], -1).reshape(1, h * w, 2).expand(b, -1, -1), atol=1e-5)
    assert torch.allclose(splats.means[..., 2], maps.depth.flatten(1))
    assert torch.equal(splats.opacities, maps.opacity.flatten(1))
    assert torch.equal(splats.colors, maps.color.flatten(2).transpose(1, 2))
    assert torch.equal(splats.quats, maps.rotation.flatten(2).transpose(1, 2))
    assert torch.equal(splats.scales, maps.scale.flatten(2).transpose(1, 2))
    # Static and dynamic offsets move the centres by exactly their value.
    maps.offset.copy_(torch.randn(b, 3, h, w, generator=gen) * 0.1)
    dynamic = torch.randn(b, 3, h, w, generator=gen) * 0.1
    moved = to_splats(attributes, intrinsics, dynamic)
    expected = splats.means + (maps.offset + dynamic).flatten(2).transpose(1, 2)
    assert torch.allclose(moved.means, expected, atol=1e-6)


def test_untrained_generator_reproduces_the_input_at_the_source_camera():
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image provides the test photograph")
    photo = torch.from_numpy(skimage_data.astronaut()).permute(2, 0, 1)[None].float() / 255
    target = F.interpolate(photo, size=(S, S), mode="area")
    model = tiny_model()
    c2w, intrinsics = camera.default_c2w((1,)), camera.default_intrinsics((1,))
    with torch.no_grad():
        enc = model.encode(target * 2 - 1, c2w, intrinsics)
        out = render(
            model.splats(enc), camera.relative_pose(c2w, c2w), camera.intrinsics_to_K(intrinsics, S, S), S, S,
            background=enc.background_hwc, backend="torch",
        )  # fmt: skip
    assert psnr(out.rgb.permute(0, 3, 1, 2), target) >= 20.0
    assert out.alpha.min() > 0.9
    assert torch.allclose(out.depth, torch.full_like(out.depth, model.config.generator.depth_init), atol=0.05)


# --- dynamic decoder and audio ------------------------------------------------------------------


def test_untrained_dynamic_decoder_leaves_the_head_static():
    model = tiny_model()
    image, c2w, intrinsics = inputs()
    with torch.no_grad():
        enc = model.encode(image, c2w, intrinsics)
        offsets = model.dynamic_offsets(enc.features, *audio_inputs(2))
    assert offsets.shape == (2, 3, S, S)
    assert torch.equal(offsets, torch.zeros_like(offsets))
    assert torch.equal(model.splats(enc, offsets).means, model.splats(enc).means)


def test_audio_modules_shapes_and_attention_weights():
    net = AudioNet(feature_dim=1024, hidden_channels=32, embedding_dim=24)
    assert net(torch.randn(5, 16, 1024)).shape == (5, 24)
    att = AudioAttNet(embedding_dim=24)
    embeddings = torch.randn(3, 8, 24)
    weights = att.weights(embeddings)
    assert weights.shape == (3, 8) and weights.min() >= 0
    assert torch.allclose(weights.sum(1), torch.ones(3))
    assert torch.allclose(att(embeddings), (weights[:, :, None] * embeddings).sum(1))
    # Identical windows: the weighted sum is that embedding whatever the weights.
    same = embeddings[:, :1].expand(-1, 8, -1)
    assert torch.allclose(att(same), embeddings[:, 0], atol=1e-6)
    encoder = AudioEncoder(AudioConfig(feature_dim=7))
    assert encoder(torch.randn(4, 8, 16, 7)).shape == (4, AudioConfig().embedding_dim)


def test_time_delta_embedding_is_a_bounded_positional_code():
    cfg = AudioConfig()
    emb = time_delta_embedding(torch.tensor([0.0, 0.04, 1.0, 60.0]), cfg)
    assert emb.shape == (4, cfg.time_embedding_dim)
    half = cfg.time_embedding_dim // 2
    assert torch.equal(emb[0], torch.cat([torch.ones(half), torch.zeros(half)]))
    assert torch.allclose(emb[:, :half] ** 2 + emb[:, half:] ** 2, torch.ones(4, half), atol=1e-5)
    # One video frame apart (0.04 s) is already distinguishable.
    assert (emb[1] - emb[0]).abs().max() > 0.5


def test_dynamic_features_of_one_portrait_broadcast_over_frames():
    model = tiny_model()
    wake_dynamic_decoder(model)
    with torch.no_grad():
        enc = model.encode(*inputs(batch=1))
        windows, delta_t = audio_inputs(3)
        broadcast = model.dynamic_offsets(enc.features, windows, delta_t)
        expanded = model.dynamic_offsets(tuple(f.expand(3, -1, -1, -1) for f in enc.features), windows, delta_t)
    assert broadcast.shape == (3, 3, S, S)
    assert torch.allclose(broadcast, expanded, atol=1e-6)


# --- conditioning ---------------------------------------------------------------------------------


def test_camera_film_changes_the_generator_and_acts_per_sample():
    model = tiny_model()
    image, c2w, intrinsics = inputs(batch=1)
    moved = c2w.clone()
    moved[:, :3, 3] += torch.tensor([0.2, 0.0, 0.3])
    zoomed = intrinsics.clone()
    zoomed[:, :2] *= 1.1
    with torch.no_grad():
        base = model.encode(image, c2w, intrinsics)
        by_pose = model.encode(image, moved, intrinsics)
        by_focal = model.encode(image, c2w, zoomed)
        both = model.encode(image.expand(2, -1, -1, -1), torch.cat([c2w, moved]), torch.cat([intrinsics, intrinsics]))
    # The background and decoder features depend on the camera only through FiLM.
    for other in (by_pose, by_focal):
        assert (other.background - base.background).abs().max() > 1e-5
        assert (other.features[-1] - base.features[-1]).abs().max() > 1e-4
    # Each sample is conditioned on its own camera.
    assert torch.allclose(both.attributes[:1], base.attributes, atol=1e-5)
    assert torch.allclose(both.attributes[1:], by_pose.attributes, atol=1e-5)


def test_audio_and_time_film_change_the_dynamic_offsets():
    model = tiny_model()
    wake_dynamic_decoder(model)
    with torch.no_grad():
        enc = model.encode(*inputs(batch=1))
        windows, delta_t = audio_inputs(1)
        base = model.dynamic_offsets(enc.features, windows, delta_t)
        other_audio = model.dynamic_offsets(enc.features, audio_inputs(1, seed=9)[0], delta_t)
        other_time = model.dynamic_offsets(enc.features, windows, delta_t + 0.5)
        again = model.dynamic_offsets(enc.features, windows, delta_t)
    assert torch.equal(base, again)
    assert (other_audio - base).abs().max() > 1e-4
    assert (other_time - base).abs().max() > 1e-4


# --- gradients ------------------------------------------------------------------------------------


def rendered_loss(model: TalkingHead, step_seed: int) -> torch.Tensor:
    """Stage II's loss shape: source view static over the predicted background, target view with Δd."""
    image, c2w, intrinsics = inputs(batch=2)
    windows, delta_t = audio_inputs(2)
    target_c2w = camera.orbit_around(c2w, torch.tensor([0.2, -0.3]), torch.tensor([0.1, 0.0]))
    K = camera.intrinsics_to_K(intrinsics, S, S)
    enc = model.encode(image, c2w, intrinsics)
    offsets = model.dynamic_offsets(enc.features, windows, delta_t)
    gen = torch.Generator().manual_seed(step_seed)
    target = torch.rand(2, S, S, 3, generator=gen)
    source = render(model.splats(enc), camera.relative_pose(c2w, c2w), K, S, S, enc.background_hwc, "torch")
    target_view = camera.relative_pose(c2w, target_c2w)
    moved = render(model.splats(enc, offsets), target_view, K, S, S, enc.background_hwc, "torch")
    return F.mse_loss(source.rgb, (image.permute(0, 2, 3, 1) + 1) / 2) + F.mse_loss(moved.rgb, target)


def test_rendered_image_loss_reaches_every_parameter():
    model = tiny_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    rendered_loss(model, 0).backward()
    named = dict(model.named_parameters())
    no_grad = [n for n, p in named.items() if p.grad is None or not torch.any(p.grad != 0)]
    # At initialisation only the dynamic decoder's zeroed last layer blocks the audio path.
    assert all(n.startswith("dynamic.") and not n.startswith("dynamic.conv_out") for n in no_grad)
    assert not any(n.startswith("generator.") for n in no_grad)
    optimizer.step()
    optimizer.zero_grad()
    rendered_loss(model, 1).backward()
    for name, param in named.items():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert torch.any(param.grad != 0), f"{name} gets no gradient"


# --- configs, presets -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PRESETS))
def test_config_round_trips_through_plain_dicts(name):
    config = PRESETS[name]
    data = config.to_dict()
    assert isinstance(data["generator"]["unet"]["channel_mults"], list)
    assert ModelConfig.from_dict(data) == config


def test_config_from_dict_rejects_unknown_fields_and_fills_new_ones():
    data = PRESETS["tiny"].to_dict()
    data["generator"]["unet"]["depth_multiplier"] = 2
    with pytest.raises(ValueError, match="unknown UNetConfig field"):
        ModelConfig.from_dict(data)
    data = PRESETS["tiny"].to_dict()
    del data["dynamic"]["max_offset"]
    assert ModelConfig.from_dict(data).dynamic.max_offset == PRESETS["tiny"].dynamic.max_offset


def test_preset_overrides_by_unique_name_or_path():
    config = preset("small", feature_dim=1024, dynamic__base_channels=4, z_far=4.0)
    assert config.dynamic.audio.feature_dim == 1024
    assert config.dynamic.base_channels == 4
    assert config.generator.z_far == 4.0
    assert config.generator.unet == PRESETS["small"].generator.unet
    with pytest.raises(ValueError, match="matches: generator__unet__base_channels, dynamic__base_channels"):
        preset("tiny", base_channels=8)
    with pytest.raises(ValueError, match=r"'no_such_field' must name exactly one config field \(matches: none\)"):
        preset("tiny", no_such_field=1)
    with pytest.raises(ValueError, match="unknown model preset 'huge'; choose one of tiny, small, paper"):
        preset("huge")


def test_invalid_configs_are_rejected():
    with pytest.raises(ValueError, match="must be divisible by 2"):
        UNetConfig(image_size=60, channel_mults=(1, 2, 2, 2))
    with pytest.raises(ValueError, match="depth_init"):
        GeneratorConfig(z_near=3.0)


def test_parameter_tables_in_the_package_docstring_and_readme_are_current():
    rows = {}
    for name, config in PRESETS.items():
        with torch.device("meta"):
            model = TalkingHead(config)
        gen = sum(p.numel() for p in model.generator.parameters())
        dyn = sum(p.numel() for p in model.dynamic.parameters())
        audio = sum(p.numel() for p in model.dynamic.audio.parameters())
        total, s = gen + dyn, config.image_size
        rows[name] = f"| {name} | {s}² | {gen:,} | {dyn:,} | {audio:,} | {total:,} | {total * 4 / 1e6:.1f} MB |"
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    for row in rows.values():
        assert row in models.__doc__, f"update the table in splat_portrait/models/__init__.py: {row}"
        assert row in readme, f"update the preset table in README.md: {row}"
    # The demo preset's fp32 weights stay within ~20 MB so its exported ONNX files do too.
    small = PRESETS["small"]
    with torch.device("meta"):
        assert sum(p.numel() for p in TalkingHead(small).parameters()) * 4 < 20e6


# --- ONNX-friendliness ----------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("footprint", [0.0, 0.5])
def test_both_graphs_export_to_onnx_with_a_dynamic_frame_batch(tmp_path, footprint):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime checks the exported graphs")
    model = tiny_model(footprint=footprint).eval()
    wake_dynamic_decoder(model)
    image, c2w, intrinsics = inputs(batch=1)
    with torch.no_grad():
        attributes, background, features = model.generator(image, c2w, intrinsics)
    names = [f"features_{i}" for i in range(len(features))]
    gen_path, dyn_path = tmp_path / "generator.onnx", tmp_path / "dynamic.onnx"
    torch.onnx.export(
        model.generator, (image, c2w, intrinsics), gen_path, opset_version=17, dynamo=False,
        input_names=["image", "c2w", "intrinsics"], output_names=["attributes", "background", *names],
    )  # fmt: skip

    class Dynamic(torch.nn.Module):
        def __init__(self, decoder):
            super().__init__()
            self.decoder = decoder

        def forward(self, *args):
            return self.decoder(args[:-2], args[-2], args[-1])

    torch.onnx.export(
        Dynamic(model.dynamic), (*features, *audio_inputs(2)), dyn_path, opset_version=17, dynamo=False,
        input_names=[*names, "windows", "delta_t"], output_names=["offsets"],
        dynamic_axes={"windows": {0: "frames"}, "delta_t": {0: "frames"}, "offsets": {0: "frames"}},
    )  # fmt: skip
    gen_out = ort.InferenceSession(str(gen_path)).run(
        None, {"image": image.numpy(), "c2w": c2w.numpy(), "intrinsics": intrinsics.numpy()}
    )
    assert torch.allclose(torch.from_numpy(gen_out[0]), attributes, atol=1e-4)
    session = ort.InferenceSession(str(dyn_path))
    for frames in (1, 3):
        windows, delta_t = audio_inputs(frames, seed=frames)
        feed = {n: f.numpy() for n, f in zip(names, features)}
        feed |= {"windows": windows.numpy(), "delta_t": delta_t.numpy()}
        with torch.no_grad():
            expected = model.dynamic(features, windows, delta_t)
        assert torch.allclose(torch.from_numpy(session.run(None, feed)[0]), expected, atol=1e-5)


def test_presets_build_and_run_at_their_size():
    config = PRESETS["small"]
    model = TalkingHead(config)
    size = config.image_size
    with torch.no_grad():
        enc = model.encode(*inputs(batch=1, size=size))
        offsets = model.dynamic_offsets(enc.features, *audio_inputs(1, dim=config.dynamic.audio.feature_dim))
    assert model.splats(enc, offsets).num_splats == size * size
