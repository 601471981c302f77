import pytest
import torch
import torchvision

from splat_portrait.errors import SplatPortraitError
from splat_portrait.losses import LPIPSLoss, VGGFaceLoss, lpips_backbone_path, mse
from splat_portrait.losses.perceptual import VGGFace

VGG16_FILE = "vgg16-397923af.pth"
LAYOUT = "with keys conv1_1.weight ... conv5_3.bias (fc6-fc8 optional), as in a converted vgg_face_dag.pth"


def images(seed: int, size: int = 32) -> torch.Tensor:
    return torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_mse():
    a, b = torch.zeros(2, 3), torch.full((2, 3), 2.0)
    assert mse(a, b).item() == 4.0
    with pytest.raises(ValueError, match=r"mse needs equal shapes, got \(2, 3\) and \(3, 2\)"):
        mse(a, b.T)


def test_lpips_without_backbone_weights_names_the_file_and_the_way_out(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_downloads(*args, **kwargs):
        raise AssertionError("LPIPS must not download anything")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_downloads)
    with pytest.raises(SplatPortraitError) as info:
        LPIPSLoss()
    folder = tmp_path / "hub" / "checkpoints"
    assert str(info.value) == (
        f"LPIPS needs torchvision's VGG16 weights ({VGG16_FILE}), which are not in {folder} and cannot be "
        "downloaded here: copy the file there (or set TORCH_HOME) or pass --lpips-weight 0"
    )
    assert lpips_backbone_path("alex") == folder / "alexnet-owt-7be5be79.pth"
    assert not folder.exists()


@pytest.fixture(scope="module")
def vgg16_file(tmp_path_factory):
    """A randomly initialised torchvision VGG16 state dict where torchvision looks for the real one.

    Only the convolutions are random tensors; the classifier (unused by LPIPS) is stored as broadcast
    zeros, which keeps the file at ~60 MB instead of ~550 MB.
    """
    home = tmp_path_factory.mktemp("torch_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(home))
        path = lpips_backbone_path("vgg")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        state = torchvision.models.vgg16(weights=None).state_dict()
    state = {k: v if k.startswith("features.") else torch.zeros(()).expand(v.shape) for k, v in state.items()}
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return home, state


@pytest.fixture(scope="module")
def lpips_loss(vgg16_file):
    home, _ = vgg16_file
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(home))
        return LPIPSLoss("vgg")


def test_lpips_loads_the_cached_backbone_not_a_random_one(lpips_loss, vgg16_file):
    _, state = vgg16_file
    backbone = lpips_loss.net.net.state_dict()  # lpips keeps torchvision's layer numbers inside its slices
    assert torch.equal(backbone["slice1.0.weight"], state["features.0.weight"])
    assert torch.equal(backbone["slice5.28.bias"], state["features.28.bias"])
    assert not any(p.requires_grad for p in lpips_loss.parameters())
    lpips_loss.train()
    assert not lpips_loss.net.training


def test_lpips_distance_and_gradient(lpips_loss):
    x, y = images(0), images(1)
    assert lpips_loss(x, x).item() == 0.0
    pred = x.clone().requires_grad_()
    loss = lpips_loss(pred, y)
    loss.backward()
    assert loss.item() > 0
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="expected two"):
        lpips_loss(x, y[:1])


def test_lpips_with_a_broken_backbone_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = lpips_backbone_path("vgg")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(SplatPortraitError, match=rf"^LPIPS could not load {path} \(.*\); replace it with torchvision's file from https://download\.pytorch\.org/models/{VGG16_FILE}$"):  # fmt: skip
        LPIPSLoss("vgg")


@pytest.fixture
def vggface_file(tmp_path):
    with torch.random.fork_rng():
        torch.manual_seed(1)
        state = VGGFace(width=2).state_dict()
    # The published classifier (4096 -> 2622 identities) may ride along; it is ignored.
    state["fc8.weight"] = torch.zeros(2622, 4)
    state["fc8.bias"] = torch.zeros(2622)
    path = tmp_path / "vgg_face.pth"
    torch.save(state, path)
    return path, state


def test_vggface_loss_with_a_small_state_dict(vggface_file):
    path, state = vggface_file
    loss_fn = VGGFaceLoss(path)
    assert loss_fn.net.conv5_3.weight.shape == (16, 16, 3, 3)  # width 2 read from the file
    assert torch.equal(loss_fn.net.conv3_2.weight, state["conv3_2.weight"])
    assert not any(p.requires_grad for p in loss_fn.parameters())
    x, y = images(2), images(3)
    assert loss_fn(x, x).item() == 0.0
    pred = x.clone().requires_grad_()
    loss = loss_fn(pred, y)
    loss.backward()
    assert 0 < loss.item() <= 5 * 4  # each block's normalised squared distance is at most 4
    assert pred.grad.abs().sum() > 0


def test_vggface_feature_distance_matches_its_definition(vggface_file):
    path, _ = vggface_file
    loss_fn = VGGFaceLoss(path)
    x, y = images(4), images(5)
    mean = torch.tensor([129.186279296875, 104.76238250732422, 93.59396362304688]).view(1, 3, 1, 1)
    expected = 0.0
    for a, b in zip(loss_fn.net(x * 255 - mean), loss_fn.net(y * 255 - mean)):
        a, b = a / a.norm(dim=1, keepdim=True).clamp_min(1e-10), b / b.norm(dim=1, keepdim=True).clamp_min(1e-10)
        expected += ((a - b) ** 2).sum(1).mean()
    torch.testing.assert_close(loss_fn(x, y), expected)


def test_vggface_wrong_keys_and_shapes(vggface_file, tmp_path):
    _, state = vggface_file
    renamed = dict(state)
    renamed["features.0.weight"] = renamed.pop("conv1_1.weight")
    path = tmp_path / "renamed.pth"
    torch.save(renamed, path)
    with pytest.raises(SplatPortraitError) as info:
        VGGFaceLoss(path)
    assert str(info.value) == (
        f"{path} is not a VGG-Face state dict (1 missing and 1 unexpected keys, e.g. conv1_1.weight); it must be one {LAYOUT}"
    )
    misshapen = dict(state)
    misshapen["conv3_1.weight"] = torch.zeros(8, 4, 1, 1)
    torch.save(misshapen, path)
    with pytest.raises(SplatPortraitError) as info:
        VGGFaceLoss(path)
    assert str(info.value) == (
        f"{path}: conv3_1.weight has shape (8, 4, 1, 1) where a VGG-Face of width 2 has (8, 4, 3, 3); "
        "the file is not a VGG-Face state dict"
    )


def test_vggface_missing_and_unreadable_files(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(SplatPortraitError) as info:
        VGGFaceLoss(missing)
    assert str(info.value) == f"VGGFace weights {missing} do not exist; pass --vggface a PyTorch state dict {LAYOUT}, or leave --vggface out"
    for name, write in (("text.pth", lambda p: p.write_text("hello")), ("list.pth", lambda p: torch.save([1, 2], p))):
        path = tmp_path / name
        write(path)
        with pytest.raises(SplatPortraitError) as info:
            VGGFaceLoss(path)
        assert str(info.value) == f"VGGFace weights {path} are not a PyTorch state dict; convert the published model to one {LAYOUT}"
