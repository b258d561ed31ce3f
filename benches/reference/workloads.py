"""PyTorch models of the three `cargo bench --bench step` workloads, the same architectures
pretext builds from `benches/recipes/*.toml`:

- `mae`: pretext_ref.Mae (the module the parity fixtures come from), images [B, C, H, W].
- `audio-mae`: GridMae, the same MAE over a frequency x time patch grid of a log-mel
  spectrogram [B, F, T] (src/objective/audio_mae.rs: linear patch embedding, fixed 2-D
  sin-cos positions, class token, the image MAE's light decoder, MSE on removed patches).
- `mlm`: BertMlm, BERT's embeddings + post-norm encoder + the tied MLM head evaluated at the
  masked positions only, as src/objective/mlm.rs does.

The backbone (pretext_ref.Encoder) is shared by all three, as it is in pretext.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import pretext_ref


def sincos_grid(dim, grid_h, grid_w):
    """[1, 1 + gh*gw, dim] fixed 2-D sin-cos positions with a zero class-token row."""
    gh = np.arange(grid_h, dtype=np.float64)
    gw = np.arange(grid_w, dtype=np.float64)
    grid = np.stack(np.meshgrid(gw, gh), axis=0).reshape(2, 1, grid_h, grid_w)
    emb_h = pretext_ref.get_1d_sincos_pos_embed_from_grid(dim // 2, grid[0])
    emb_w = pretext_ref.get_1d_sincos_pos_embed_from_grid(dim // 2, grid[1])
    emb = np.concatenate([np.zeros([1, dim]), np.concatenate([emb_h, emb_w], axis=1)], axis=0)
    return torch.from_numpy(emb.astype(np.float32)).unsqueeze(0)


class GridMae(nn.Module):
    """MAE over a [F, T] spectrogram cut into pf x pt patches."""

    def __init__(self, cfg):
        super().__init__()
        g = cfg["geometry"]
        self.pf, self.pt = g["patch_freq"], g["patch_time"]
        self.gf, self.gt = g["mels"] // self.pf, g["frames"] // self.pt
        self.num_patches = self.gf * self.gt
        self.mask_ratio = cfg["mask_ratio"]
        self.norm_pix_loss = cfg["norm_pix_loss"]
        d, dd = cfg["encoder"]["dim"], cfg["decoder"]["dim"]
        patch_dim = self.pf * self.pt
        self.patch_embed = nn.Linear(patch_dim, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.register_buffer("pos_embed", sincos_grid(d, self.gf, self.gt), persistent=False)
        self.encoder = pretext_ref.Encoder(cfg["encoder"])
        self.dec_embed = nn.Linear(d, dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dd))
        self.register_buffer("dec_pos", sincos_grid(dd, self.gf, self.gt), persistent=False)
        self.decoder = pretext_ref.Encoder(cfg["decoder"])
        self.pred = nn.Linear(dd, patch_dim)

    def patchify(self, spec):
        b = spec.shape[0]
        x = spec.reshape(b, self.gf, self.pf, self.gt, self.pt)
        return x.permute(0, 1, 3, 2, 4).reshape(b, self.num_patches, self.pf * self.pt)

    def encode(self, tokens):
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
        return self.encoder(torch.cat([cls, tokens], dim=1))

    def forward_features(self, spec):
        """The encoder on every patch: [B, 1 + L, D]."""
        return self.encode(self.patch_embed(self.patchify(spec)) + self.pos_embed[:, 1:])

    def forward(self, spec, noise):
        patches = self.patchify(spec)
        x = self.patch_embed(patches) + self.pos_embed[:, 1:]
        b, l, d = x.shape
        keep = int(l * (1.0 - self.mask_ratio))
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        x = torch.gather(x, 1, ids_shuffle[:, :keep].unsqueeze(-1).expand(-1, -1, d))
        mask = torch.ones(b, l)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        latent = self.encode(x)
        y = self.dec_embed(latent)
        dd = y.shape[-1]
        y_ = torch.cat([y[:, 1:], self.mask_token.expand(b, l - keep, dd)], dim=1)
        y_ = torch.gather(y_, 1, ids_restore.unsqueeze(-1).expand(-1, -1, dd))
        y = self.decoder(torch.cat([y[:, :1], y_], dim=1) + self.dec_pos)
        pred = self.pred(y)[:, 1:]
        target = patches
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        per_patch = ((pred - target) ** 2).mean(dim=-1)
        return (per_patch * mask).sum() / mask.sum()


class BertMlm(nn.Module):
    """Word + position + token-type embeddings, LayerNorm, the post-norm encoder, and the
    head `norm(gelu(dense(h))) @ word_embeddings^T + bias` at the masked positions."""

    def __init__(self, cfg):
        super().__init__()
        enc = cfg["encoder"]
        d, v = enc["dim"], cfg["vocab_size"]
        self.word = nn.Embedding(v, d)
        self.position = nn.Embedding(cfg["max_len"], d)
        self.token_type = nn.Embedding(2, d)
        self.embed_norm = nn.LayerNorm(d, eps=enc["norm_eps"])
        self.encoder = pretext_ref.Encoder(enc)
        self.dense = nn.Linear(d, d)
        self.head_norm = nn.LayerNorm(d, eps=enc["norm_eps"])
        self.head_bias = nn.Parameter(torch.zeros(v))

    def forward_features(self, ids, attention_mask):
        t = ids.shape[1]
        pos = torch.arange(t).unsqueeze(0)
        x = self.word(ids) + self.position(pos) + self.token_type(torch.zeros_like(ids))
        return self.encoder(self.embed_norm(x), attention_mask)

    def forward(self, ids, attention_mask, positions, targets):
        h = self.forward_features(ids, attention_mask)
        chosen = h.reshape(-1, h.shape[-1])[positions]
        logits = self.head_norm(F.gelu(self.dense(chosen))) @ self.word.weight.t() + self.head_bias
        return F.cross_entropy(logits, targets)


def init_(model, generator):
    """Xavier-uniform matrices, zero biases, unit norms, N(0, 0.02) tokens and embeddings."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if name.endswith("_token") or name.split(".")[0] in ("word", "position", "token_type"):
                p.normal_(0.0, 0.02, generator=generator)
            elif leaf == "bias" or name.endswith("_bias"):
                p.zero_()
            elif "norm" in name:
                p.fill_(1.0)
            else:
                fan_out, fan_in = p.shape[0], p[0].numel()
                bound = math.sqrt(6.0 / (fan_in + fan_out))
                p.uniform_(-bound, bound, generator=generator)


class Workload:
    """A model, a fixed batch of the recipe's shape and its training / inference steps."""

    def __init__(self, cfg, generator):
        kind = cfg["kind"]
        b = cfg["batch"]
        self.kind = kind
        if kind == "mae":
            self.model = pretext_ref.Mae(cfg["model"])
            g = cfg["model"]["geometry"]
            self.inputs = torch.randn(b, g["channels"], g["size"], g["size"], generator=generator)
            self.num_patches = (g["size"] // g["patch"]) ** 2
        elif kind == "audio-mae":
            self.model = GridMae(cfg["model"])
            g = cfg["model"]["geometry"]
            self.inputs = torch.randn(b, g["mels"], g["frames"], generator=generator)
            self.num_patches = self.model.num_patches
        elif kind == "mlm":
            m = cfg["model"]
            self.model = BertMlm(m)
            t, v = m["max_len"], m["vocab_size"]
            self.ids = torch.randint(5, v, (b, t), generator=generator)
            self.attention = torch.ones(b, t)
            self.mask_ratio = m["mask_ratio"]
        else:
            raise ValueError(f"unknown workload kind {kind!r}")
        init_(self.model, generator)

    def loss(self):
        if self.kind == "mae":
            noise = torch.rand(self.inputs.shape[0], self.num_patches)
            return self.model(self.inputs, noise)[0]
        if self.kind == "audio-mae":
            noise = torch.rand(self.inputs.shape[0], self.num_patches)
            return self.model(self.inputs, noise)
        # MLM: fresh dynamic masks each step, as DataCollatorForLanguageModeling.
        chosen = torch.rand(self.ids.shape) < self.mask_ratio
        positions = chosen.flatten().nonzero().squeeze(1)
        targets = self.ids.flatten()[positions]
        ids = self.ids.clone()
        ids[chosen] = 4
        return self.model(ids, self.attention, positions, targets)

    def infer(self):
        if self.kind == "mae":
            return self.model.vit(self.inputs)
        if self.kind == "audio-mae":
            return self.model.forward_features(self.inputs)
        return self.model.forward_features(self.ids, self.attention)
