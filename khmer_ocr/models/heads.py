"""Output heads: the CTC projection and the multi-head attention decoder of the hybrid recognizer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PAD, SOS, EOS, UNK = 0, 1, 2, 3  # the first ids of khmer_ocr.script.charset.SPECIALS; PAD is the CTC blank


class CTCHead(nn.Module):
    """Per-frame class logits (blank = id 0)."""

    def __init__(self, in_dim: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(in_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.dropout(x))


class AttentionDecoder(nn.Module):
    """Autoregressive decoder: token embedding -> LSTM state -> multi-head attention over the encoder
    frames (padding frames masked) -> LayerNorm(state + context) -> dropout -> classifier.

    The LSTM reads only the previous tokens (no input feeding of the last context, as in SAR), so under
    teacher forcing all steps run in one LSTM call and one attention call. Its initial state comes from the
    masked mean of the encoder frames. Greedy decoding projects the attention keys and values once and
    reuses them at every step, with the same weights as the `nn.MultiheadAttention` used in training.
    """

    def __init__(
        self, num_classes: int, enc_dim: int, d_model: int, heads: int, dropout: float, max_length: int
    ) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"decoder width {d_model} is not divisible by heads={heads}")
        self.heads = heads
        self.max_length = max_length
        self.memory_proj = nn.Linear(enc_dim, d_model)
        self.init_state = nn.Linear(d_model, d_model)
        self.embedding = nn.Embedding(num_classes, d_model, padding_idx=PAD)
        self.rnn = nn.LSTM(d_model, d_model, batch_first=True)
        self.attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(d_model, num_classes)

    def _prepare(
        self, encoded: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        memory = self.memory_proj(encoded)  # (B, T, D)
        pad_mask = torch.arange(memory.size(1), device=memory.device)[None, :] >= lengths[:, None]
        keep = (~pad_mask).unsqueeze(-1).to(memory.dtype)
        mean = (memory * keep).sum(1) / keep.sum(1).clamp(min=1)
        h0 = torch.tanh(self.init_state(mean)).unsqueeze(0)
        return memory, pad_mask, (h0, torch.zeros_like(h0))

    def _output(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.norm(query + self.dropout(context))))

    def forward(self, encoded: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Teacher forcing. encoded (B, T, C), lengths (B,), targets (B, L+1) = <sos> + tokens, 0-padded.

        Returns logits (B, L+1, V): step t predicts the token after targets[:, t] (the last real one
        predicts <eos>); see `decoder_targets`.
        """
        memory, pad_mask, state = self._prepare(encoded, lengths)
        query, _ = self.rnn(self.embedding(targets), state)
        context, _ = self.attn(query, memory, memory, key_padding_mask=pad_mask, need_weights=False)
        return self._output(query, context)

    @torch.inference_mode()
    def greedy(
        self, encoded: torch.Tensor, lengths: torch.Tensor, max_length: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Batched greedy decoding -> token ids (B, S) and their probabilities (B, S); <eos> then 0-padding
        ends each row (S <= max_length + 1)."""
        max_length = self.max_length if max_length is None else max_length
        memory, pad_mask, state = self._prepare(encoded, lengths)
        b, t, d = memory.shape
        h, hd = self.heads, d // self.heads
        w_q, w_k, w_v = self.attn.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.attn.in_proj_bias.chunk(3)
        keys = F.linear(memory, w_k, b_k).view(b, t, h, hd).transpose(1, 2)  # (B, h, T, hd)
        values = F.linear(memory, w_v, b_v).view(b, t, h, hd).transpose(1, 2)
        bias = torch.zeros(b, 1, 1, t, dtype=memory.dtype, device=memory.device)
        bias = bias.masked_fill(pad_mask[:, None, None, :], float("-inf"))

        token = torch.full((b, 1), SOS, dtype=torch.long, device=memory.device)
        done = torch.zeros(b, dtype=torch.bool, device=memory.device)
        ids, probs = [], []
        for _ in range(max_length + 1):
            query, state = self.rnn(self.embedding(token), state)  # (B, 1, D)
            q = F.linear(query, w_q, b_q).view(b, 1, h, hd).transpose(1, 2)
            ctx = F.scaled_dot_product_attention(q, keys, values, attn_mask=bias)
            ctx = self.attn.out_proj(ctx.transpose(1, 2).reshape(b, 1, d))
            p, token = self._output(query, ctx).softmax(-1).max(-1)  # (B, 1)
            token = token.masked_fill(done[:, None], PAD)
            ids.append(token)
            probs.append(p.masked_fill(done[:, None], 0.0))
            done = done | (token[:, 0] == EOS)
            if bool(done.all()):
                break
        return torch.cat(ids, 1), torch.cat(probs, 1)


def decoder_targets(sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoder input and label tensors from token id lists (without specials), both (B, L+1), 0-padded:
    inputs = <sos> + tokens, labels = tokens + <eos>. Train with cross-entropy(ignore_index=0)."""
    longest = max((len(s) for s in sequences), default=0)
    inputs = torch.zeros(len(sequences), longest + 1, dtype=torch.long)
    labels = torch.zeros(len(sequences), longest + 1, dtype=torch.long)
    for i, seq in enumerate(sequences):
        n = len(seq)
        inputs[i, 0] = SOS
        inputs[i, 1 : n + 1] = torch.as_tensor(seq, dtype=torch.long)
        labels[i, :n] = torch.as_tensor(seq, dtype=torch.long)
        labels[i, n] = EOS
    return inputs, labels
