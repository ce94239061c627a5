"""Feature extractors (CNN image -> frame sequence) and the BiLSTM sequence encoder.

Every module here takes the true widths (or frame lengths) of a right-padded batch and zeroes the padding
columns of each feature map before the next spatial convolution, so an image gives the same features alone
or inside a padded batch (in eval mode; in train mode BatchNorm statistics also see the padding). Input
convention: float images (B, 1, H, W), ink = 1.0 and paper = 0.0, right-padded with 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def mask_columns(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Zero the columns at or past each sample's valid width: x (B, C, H, W), lengths (B,) or None (no
    padding anywhere in the batch: nothing to do)."""
    if lengths is None:
        return x
    keep = torch.arange(x.size(-1), device=x.device)[None, :] < lengths[:, None]
    return x * keep[:, None, None, :].to(x.dtype)


def needs_mask(images: torch.Tensor, widths: torch.Tensor) -> bool:
    """Whether any image of the batch is padded. Always true while tracing, so that an exported module
    masks whatever batch it is given."""
    return torch.jit.is_tracing() or bool((widths < images.size(-1)).any())


def strided_length(lengths: torch.Tensor, stride: int) -> torch.Tensor:
    """Valid columns after a 3-wide convolution with padding 1 and this stride: ceil(L / stride)."""
    return (lengths + stride - 1) // stride


def conv_bn(cin: int, cout: int, kernel=3, stride=1, padding=1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False), nn.BatchNorm2d(cout)
    )


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convolutions), padding columns re-zeroed after each activation."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = conv_bn(cin, cout)
        self.conv2 = conv_bn(cout, cout)
        self.shortcut = conv_bn(cin, cout, 1, 1, 0) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        y = mask_columns(F.relu(self.conv1(x), inplace=True), lengths)
        y = self.conv2(y) + self.shortcut(x)
        return mask_columns(F.relu(y, inplace=True), lengths)


class ResNetBackbone(nn.Module):
    """VGG/ResNet-like CNN: height H -> 1, width W -> W // 4 frames of `out_dim` features.

    stem 3x3 conv at full resolution, then four stages of basic blocks, each after a max-pool:
    2x2, 2x2, (2, 1), (2, 1); a last (H/16 x 1) convolution collapses the remaining rows.
    """

    def __init__(
        self, channels: tuple[int, ...], blocks: tuple[int, ...], out_dim: int, input_height: int = 48
    ) -> None:
        super().__init__()
        if input_height % 16:
            raise ValueError(f"input_height must be a multiple of 16, got {input_height}")
        if len(channels) != 5 or len(blocks) != 4:
            raise ValueError("ResNetBackbone needs 5 channel counts (stem + 4 stages) and 4 block counts")
        self.stem = nn.Sequential(conv_bn(1, channels[0]), nn.ReLU(inplace=True))
        self.pools = nn.ModuleList(
            [
                nn.MaxPool2d(2, 2),
                nn.MaxPool2d(2, 2),
                nn.MaxPool2d((2, 1), (2, 1)),
                nn.MaxPool2d((2, 1), (2, 1)),
            ]
        )
        self.width_strides = (2, 2, 1, 1)
        self.stages = nn.ModuleList()
        for i, n in enumerate(blocks):
            cin, cout = channels[i], channels[i + 1]
            self.stages.append(nn.ModuleList([BasicBlock(cin if j == 0 else cout, cout) for j in range(n)]))
        self.collapse = nn.Sequential(
            conv_bn(channels[-1], out_dim, (input_height // 16, 1), 1, 0), nn.ReLU(inplace=True)
        )
        self.out_dim = out_dim

    def forward(self, images: torch.Tensor, widths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, 1, H, W), widths (B,) -> features (B, W // 4, out_dim), frame lengths (B,)."""
        lengths = widths.clamp(max=images.size(-1))
        masked = needs_mask(images, widths)
        x = mask_columns(self.stem(images), lengths if masked else None)
        for pool, stride, blocks in zip(self.pools, self.width_strides, self.stages, strict=True):
            x = pool(x)
            if stride == 2:
                lengths = lengths // 2
                x = mask_columns(x, lengths if masked else None)
            for block in blocks:
                x = block(x, lengths if masked else None)
        x = self.collapse(x)  # (B, C, 1, T)
        return x.squeeze(2).transpose(1, 2), lengths.clamp(min=1)


def pointwise(conv_bn: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution (+ BatchNorm, unless folded away) computed as one matrix product over the
    (B, H, W, C) view of x. The result is channels_last; from a channels_last x nothing is copied (eager
    1x1 convolutions take a slower path and copy between layouts)."""
    conv, norm = conv_bn[0], conv_bn[1]
    y = F.linear(x.permute(0, 2, 3, 1), conv.weight.flatten(1), conv.bias).permute(0, 3, 1, 2)
    return norm(y)


class DepthwiseSeparable(nn.Module):
    """3x3 depthwise (maybe strided) + BN + ReLU, 1x1 pointwise + BN + ReLU; residual if shapes match (then
    the pointwise BatchNorm starts at scale 0, so that the block starts as the identity)."""

    def __init__(self, cin: int, cout: int, stride: tuple[int, int] = (1, 1)) -> None:
        super().__init__()
        self.depthwise = conv_bn(cin, cin, 3, stride, 1, groups=cin)
        self.pointwise = conv_bn(cin, cout, 1, 1, 0)
        self.residual = cin == cout and stride == (1, 1)
        self.width_stride = stride[1]
        if self.residual:  # the identity: a block added to a trained model leaves its output as it was
            nn.init.zeros_(self.pointwise[1].weight)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        """x (B, C, H, W), channels_last after the first block; lengths: valid output columns (None: no
        padding)."""
        y = F.relu(self.depthwise(x), inplace=True)
        y = F.relu(pointwise(self.pointwise, y), inplace=True)
        if self.residual:
            y = y + x
        return mask_columns(y, lengths)


class LinearBN(nn.Sequential):
    """Linear (no bias) + BatchNorm1d over the last dimension of a (..., C) tensor; `fuse_for_inference`
    folds the BatchNorm into the Linear."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.Linear(cin, cout, bias=False), nn.BatchNorm1d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self[0](x)
        return self[1](y.flatten(0, -2)).view(y.shape)


class FastBackbone(nn.Module):
    """Depthwise-separable CNN for CPU inference: a 3x3 stem of `stem_stride` (height 2, width 1 or 2),
    then `blocks` as (channels, (height stride, width stride)); with the stem the strides must bring the
    height to H/16 and the width to ceil(W / s) for a total width stride s of 2, 3 or 4 (s sets the CTC
    frames per character: at H = 48, s = 3 gives about 4 frames per Khmer code point, as Tesseract's
    Khmer network). The remaining H/16 rows of each column are flattened and projected to `out_dim`
    features per frame (a full (H/16 x 1) convolution, as one matrix product).

    Tuned for eager PyTorch on one CPU thread: activations are channels_last from the first pointwise
    convolution on (depthwise convolutions run about twice as fast so), 1x1 convolutions are matrix
    products, and nothing is masked when the batch has no padding."""

    def __init__(
        self,
        stem: int,
        blocks: tuple[tuple[int, tuple[int, int]], ...],
        out_dim: int,
        input_height: int = 48,
        stem_stride: tuple[int, int] = (2, 2),
    ) -> None:
        super().__init__()
        if input_height % 16:
            raise ValueError(f"input_height must be a multiple of 16, got {input_height}")
        h_stride, w_stride = stem_stride
        for _, (sh, sw) in blocks:
            h_stride, w_stride = h_stride * sh, w_stride * sw
        if h_stride != 16 or w_stride not in (2, 3, 4):
            raise ValueError(
                f"fast blocks must stride the height by 16 and the width by 2, 3 or 4 with the stem, got"
                f" ({h_stride}, {w_stride})"
            )
        self.width_stride = w_stride
        self.stem_width_stride = stem_stride[1]
        self.stem = nn.Sequential(conv_bn(1, stem, 3, tuple(stem_stride), 1), nn.ReLU(inplace=True))
        layers, cin = [], stem
        for cout, stride in blocks:
            layers.append(DepthwiseSeparable(cin, cout, tuple(stride)))
            cin = cout
        self.blocks = nn.ModuleList(layers)
        self.collapse = LinearBN(cin * (input_height // 16), out_dim)
        self.out_dim = out_dim

    def forward(self, images: torch.Tensor, widths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, 1, H, W), widths (B,) -> features (B, ceil(W / s), out_dim) for the width stride s,
        frame lengths (B,)."""
        masked = needs_mask(images, widths)
        # a 3-wide kernel with padding 1 and stride k keeps ceil(L / k) of L columns
        lengths = strided_length(widths.clamp(max=images.size(-1)), self.stem_width_stride)
        x = mask_columns(self.stem(images), lengths if masked else None)
        for block in self.blocks:
            lengths = strided_length(lengths, block.width_stride)
            x = block(x, lengths if masked else None)
        b, c, h, t = x.shape
        x = F.relu(self.collapse(x.permute(0, 3, 2, 1).reshape(b, t, h * c)), inplace=True)  # (B, T, D)
        return x, lengths.clamp(min=1)


def reverse_valid(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence of x (B, T, C) within its valid length; padding frames stay where they are."""
    t = torch.arange(x.size(1), device=x.device)[None, :]
    index = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
    return x.gather(1, index[:, :, None].expand_as(x))


class BiLSTMEncoder(nn.Module):
    """Stacked bidirectional LSTM over frames of a right-padded batch; outputs at padding frames are 0.

    Padding never reaches a valid frame: the forward direction reads the padded sequence (padding comes
    after every valid frame), the backward direction reads each sequence reversed within its length. Both
    run as plain (unpacked) LSTM calls on the weights of one `nn.LSTM(bidirectional=True)`: the same
    results as packing the batch, without the per-time-step slicing that makes packed backward passes
    quadratic in the length on the CPU.
    """

    def __init__(self, in_dim: int, hidden: int, layers: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.rnn = nn.LSTM(
            in_dim,
            hidden,
            num_layers=layers,
            bidirectional=True,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.out_dim = 2 * hidden

    def _direction(self, x: torch.Tensor, layer: int, suffix: str) -> torch.Tensor:
        rnn = self.rnn
        weights = [getattr(rnn, f"{name}_l{layer}{suffix}") for name in ("weight_ih", "weight_hh")]
        if rnn.bias:
            weights += [getattr(rnn, f"{name}_l{layer}{suffix}") for name in ("bias_ih", "bias_hh")]
        h0 = x.new_zeros(1, x.size(0), rnn.hidden_size)
        return torch._VF.lstm(x, (h0, h0), weights, rnn.bias, 1, 0.0, self.training, False, True)[0]

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x (B, T, C), lengths (B,) -> (B, T, 2 * hidden)."""
        if not torch.jit.is_tracing() and bool((lengths >= x.size(1)).all()):
            return self.rnn(x)[0]  # no padding: one fused call
        lengths = lengths.clamp(max=x.size(1))
        keep = (torch.arange(x.size(1), device=x.device)[None, :] < lengths[:, None]).unsqueeze(-1)
        for layer in range(self.rnn.num_layers):
            if layer > 0 and self.rnn.dropout > 0:
                x = F.dropout(x, self.rnn.dropout, self.training)
            forward = self._direction(x, layer, "")
            backward = reverse_valid(self._direction(reverse_valid(x, lengths), layer, "_reverse"), lengths)
            x = torch.cat([forward, backward], dim=-1) * keep.to(x.dtype)
        return x
