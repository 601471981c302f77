"""Audio and time conditioning of the dynamic decoder (paper Sec. 3.2).

* :class:`AudioNet` compresses one 16-step window of 50 Hz features (16, D) into an embedding:
  four stride-2 1D convolutions (16 -> 8 -> 4 -> 2 -> 1 steps) and two linear layers, LeakyReLU.
* :class:`AudioAttNet` weighs the embeddings of 8 consecutive frames' windows (1D convolutions with
  16 -> 8 -> 4 -> 2 -> 1 channels, a linear layer over the 8 positions, softmax) and sums them.
* :func:`time_delta_embedding` encodes ``ΔT = t_n - t_i`` in seconds.

Windows come from :func:`splat_portrait.audio.windows.audio_windows`: (B, 8, 16, D).
"""

from __future__ import annotations

from torch import Tensor, nn

from splat_portrait.audio.windows import NUM_WINDOWS, WINDOW
from splat_portrait.models.config import AudioConfig
from splat_portrait.models.unet import positional_embedding

NEGATIVE_SLOPE = 0.02


def _leaky() -> nn.LeakyReLU:
    return nn.LeakyReLU(NEGATIVE_SLOPE)


def _init_variance_preserving(module: nn.Module) -> None:
    # PyTorch's default init shrinks activations ~3x per layer; over these stacks the audio signal
    # would start ~1000x weaker than the time embedding beside it, and the decoder would ignore it.
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, a=NEGATIVE_SLOPE, nonlinearity="leaky_relu")
            nn.init.zeros_(m.bias)


class AudioNet(nn.Module):
    """One window of features (N, 16, D) -> embedding (N, E)."""

    def __init__(self, feature_dim: int, hidden_channels: int, embedding_dim: int) -> None:
        super().__init__()
        channels = [feature_dim, hidden_channels // 2, hidden_channels // 2, hidden_channels, hidden_channels]
        convs: list[nn.Module] = []
        for cin, cout in zip(channels[:-1], channels[1:]):
            convs += [nn.Conv1d(cin, cout, 3, stride=2, padding=1), _leaky()]
        self.convs = nn.Sequential(*convs)
        # Four stride-2 convolutions take the 16 steps down to 1.
        steps_left = WINDOW // 2 ** (len(channels) - 1)
        self.fc = nn.Sequential(
            nn.Linear(hidden_channels * steps_left, hidden_channels),
            _leaky(),
            nn.Linear(hidden_channels, embedding_dim),
        )
        _init_variance_preserving(self)

    def forward(self, window: Tensor) -> Tensor:
        return self.fc(self.convs(window.transpose(1, 2)).flatten(1))


class AudioAttNet(nn.Module):
    """Embeddings of consecutive windows (B, 8, E) -> their attention-weighted sum (B, E)."""

    def __init__(self, embedding_dim: int, num_windows: int = NUM_WINDOWS) -> None:
        super().__init__()
        channels = [embedding_dim, 16, 8, 4, 2, 1]
        layers: list[nn.Module] = []
        for cin, cout in zip(channels[:-1], channels[1:]):
            layers += [nn.Conv1d(cin, cout, 3, padding=1), _leaky()]
        self.convs = nn.Sequential(*layers)
        self.attention = nn.Sequential(nn.Linear(num_windows, num_windows), nn.Softmax(dim=1))
        _init_variance_preserving(self)

    def weights(self, embeddings: Tensor) -> Tensor:
        """Attention weights (B, 8), summing to one over the windows."""
        return self.attention(self.convs(embeddings.transpose(1, 2)).flatten(1))

    def forward(self, embeddings: Tensor) -> Tensor:
        return (self.weights(embeddings)[:, :, None] * embeddings).sum(1)


class AudioEncoder(nn.Module):
    """Windows (B, 8, 16, D) -> one audio embedding per sample (B, E): AudioNet then AudioAttNet."""

    def __init__(self, config: AudioConfig) -> None:
        super().__init__()
        self.net = AudioNet(config.feature_dim, config.hidden_channels, config.embedding_dim)
        self.att = AudioAttNet(config.embedding_dim)

    def forward(self, windows: Tensor) -> Tensor:
        embeddings = self.net(windows.flatten(0, 1)).unflatten(0, (-1, NUM_WINDOWS))
        return self.att(embeddings)


def time_delta_embedding(delta_t: Tensor, config: AudioConfig) -> Tensor:
    """Positional embedding (B, time_embedding_dim) of time deltas (B,) in seconds."""
    return positional_embedding(delta_t * config.time_scale, config.time_embedding_dim, config.time_max_period)
