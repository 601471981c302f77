import pytest
import torch

from splat_portrait.audio.windows import NUM_WINDOWS, WINDOW, audio_windows, window_indices


def ramp(num_features: int, dim: int) -> torch.Tensor:
    """Features whose every channel holds its own time index (channel c adds 1000 c)."""
    t = torch.arange(num_features, dtype=torch.float32)[:, None]
    return t + 1000 * torch.arange(dim, dtype=torch.float32)


@pytest.mark.parametrize("dim", [1, 5, 80])
def test_shapes_for_one_frame_and_a_batch_of_frames(dim):
    features = torch.randn(200, dim)
    assert audio_windows(features, 30).shape == (NUM_WINDOWS, WINDOW, dim)
    assert audio_windows(features, torch.tensor(30)).shape == (NUM_WINDOWS, WINDOW, dim)
    assert audio_windows(features, torch.tensor([0, 30, 99])).shape == (3, NUM_WINDOWS, WINDOW, dim)


def test_frame_n_is_centred_on_feature_2n_and_windows_step_one_frame():
    features = ramp(400, 3)
    n = 50
    windows = audio_windows(features, n)
    # The frame's own window is the middle one (index 4) and its centre (index 8) is feature 2n.
    assert windows[NUM_WINDOWS // 2, WINDOW // 2, 0].item() == 2 * n
    for j in range(NUM_WINDOWS):
        frame = n - NUM_WINDOWS // 2 + j
        expected = torch.arange(2 * frame - WINDOW // 2, 2 * frame + WINDOW // 2, dtype=torch.float32)
        assert torch.equal(windows[j, :, 0], expected)
    # Every channel is windowed identically.
    assert torch.equal(windows[..., 2], windows[..., 0] + 2000)


def test_edge_padding_repeats_the_first_and_last_feature():
    features = ramp(100, 2)
    first = audio_windows(features, 0)
    # Frame 0: windows of frames -4..3; everything before feature 0 repeats feature 0.
    expected_first = (torch.arange(-4, 4)[:, None] * 2 + torch.arange(-8, 8)).clamp(0, 99).float()
    assert torch.equal(first[..., 0], expected_first)
    assert first[0, :, 0].tolist() == [0.0] * WINDOW
    last_frame = 49  # 100 features at 50 Hz = 2 s = 50 frames
    last = audio_windows(features, last_frame)
    expected_last = (torch.arange(45, 53)[:, None] * 2 + torch.arange(-8, 8)).clamp(0, 99).float()
    assert torch.equal(last[..., 0], expected_last)
    # The last window (frame 52, centre 104) runs past the end after feature 99.
    assert last[-1, :, 0].tolist() == [96.0, 97.0, 98.0] + [99.0] * (WINDOW - 3)
    assert torch.equal(last[..., 1], last[..., 0] + 1000)


def test_batch_matches_single_frames_and_indices_stay_in_range():
    features = torch.randn(37, 4)
    frames = torch.tensor([0, 5, 18])
    batch = audio_windows(features, frames)
    for i, n in enumerate(frames.tolist()):
        assert torch.equal(batch[i], audio_windows(features, n))
    idx = window_indices(torch.arange(0, 40), 37)
    assert idx.min().item() == 0 and idx.max().item() == 36


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match=r"audio features must be \(T, D\), got shape \(10,\)"):
        audio_windows(torch.zeros(10), 0)
    with pytest.raises(ValueError, match="audio feature sequence is empty"):
        audio_windows(torch.zeros(0, 3), 0)
