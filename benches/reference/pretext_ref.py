"""Plain-PyTorch reference for pretext's backbone and MAE.

What it is: a line-by-line re-implementation of `src/backbone/mod.rs`, `src/backbone/ops.rs`,
`src/modality/image/{patch,embed,encoder}.rs` and `src/objective/mae.rs`, with the *same
parameter names* in `state_dict()`, so one safetensors file loads on both sides. It serves two
purposes and is deliberately the same code for both:

- `tests/fixtures/make_fixtures.py` uses it to produce the parity fixtures that
  `tests/parity.rs` checks the Rust modules against;
- `benches/reference/bench_ref.py` times it, so `cargo bench --bench step` compares pretext with
  provably the same model.

What it is not: a copy of `models_mae.py`. It follows *our* choices where they differ from the
original MAE (separate q/k/v/o projections, `patch_embed.{weight,bias}` directly under `vit.`,
the encoder stack under `vit.encoder.`, the decoder stack under `decoder.blocks.`).

Configs are plain dicts whose keys are the serde names of the Rust `EncoderConfig`
(`dim, depth, heads, mlp_dim, norm ("pre"|"post"), activation ("gelu"|"gelu-tanh"|"relu"),
norm_eps, qkv_bias, dropout, attention_dropout`), so a config can travel as JSON between the two.
"""

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# --------------------------------------------------------------------------------------------
# Backbone (src/backbone)
# --------------------------------------------------------------------------------------------


def _activation(name):
    if name == "gelu":
        return nn.GELU()  # exact, x * Phi(x): candle's gelu_erf
    if name == "gelu-tanh":
        return nn.GELU(approximate="tanh")  # candle's gelu
    if name == "relu":
        return nn.ReLU()
    raise ValueError(f"unknown activation {name!r}")


class Attention(nn.Module):
    """Multi-head self-attention with separate q/k/v/o projections (names `q, k, v, o`)."""

    def __init__(self, cfg):
        super().__init__()
        d = cfg["dim"]
        self.heads = cfg["heads"]
        self.q = nn.Linear(d, d, bias=cfg["qkv_bias"])
        self.k = nn.Linear(d, d, bias=cfg["qkv_bias"])
        self.v = nn.Linear(d, d, bias=cfg["qkv_bias"])
        self.o = nn.Linear(d, d, bias=True)
        self.attn_drop = nn.Dropout(cfg["attention_dropout"])
        self.drop = nn.Dropout(cfg["dropout"])

    def forward(self, x, bias=None):
        # x: [B, T, D]; bias: [B, 1, 1, T] additive key mask (0 or finfo.min)
        b, t, d = x.shape
        hd = d // self.heads

        def split(y):
            return y.reshape(b, t, self.heads, hd).transpose(1, 2)  # [B, H, T, hd]

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))  # [B, H, T, T]
        if bias is not None:
            scores = scores + bias
        probs = self.attn_drop(scores.softmax(dim=-1))
        ctx = (probs @ v).transpose(1, 2).reshape(b, t, d)
        return self.drop(self.o(ctx))


class Mlp(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.fc1 = nn.Linear(cfg["dim"], cfg["mlp_dim"])
        self.act = _activation(cfg["activation"])
        self.fc2 = nn.Linear(cfg["mlp_dim"], cfg["dim"])
        self.drop = nn.Dropout(cfg["dropout"])

    def forward(self, x):
        # As ours: dropout only after fc2, none after the activation.
        return self.drop(self.fc2(self.act(self.fc1(x))))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.pre = cfg["norm"] == "pre"
        self.norm1 = nn.LayerNorm(cfg["dim"], eps=cfg["norm_eps"])
        self.attn = Attention(cfg)
        self.norm2 = nn.LayerNorm(cfg["dim"], eps=cfg["norm_eps"])
        self.mlp = Mlp(cfg)

    def forward(self, x, bias=None):
        if self.pre:
            x = x + self.attn(self.norm1(x), bias)
            return x + self.mlp(self.norm2(x))
        x = self.norm1(x + self.attn(x, bias))
        return self.norm2(x + self.mlp(x))


class Encoder(nn.Module):
    """`layers.{i}.*` and, for pre-norm, a final `norm`."""

    def __init__(self, cfg):
        super().__init__()
        if cfg["norm"] not in ("pre", "post"):
            raise ValueError(f"unknown norm position {cfg['norm']!r}")
        self.dim = cfg["dim"]
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg["depth"]))
        self.norm = nn.LayerNorm(cfg["dim"], eps=cfg["norm_eps"]) if cfg["norm"] == "pre" else None

    def forward(self, x, padding_mask=None):
        # x: [B, T, D]; padding_mask: [B, T], 1 = real token, 0 = padding
        b, t, _ = x.shape
        bias = None
        if padding_mask is not None:
            m = padding_mask.to(torch.float32)
            bias = ((1.0 - m) * torch.finfo(torch.float32).min).reshape(b, 1, 1, t).to(x.dtype)
        for layer in self.layers:
            x = layer(x, bias)
        return self.norm(x) if self.norm is not None else x


# --------------------------------------------------------------------------------------------
# Image modality (src/modality/image)
# --------------------------------------------------------------------------------------------


def get_1d_sincos_pos_embed_from_grid(embed_dim, pos):
    omega = np.arange(embed_dim // 2, dtype=np.float64)
    omega /= embed_dim / 2.0
    omega = 1.0 / 10000**omega
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def get_2d_sincos_pos_embed(embed_dim, grid_size, cls_token=False):
    """MAE's `util/pos_embed.py`: [grid*grid (+1), dim]; first half encodes the column."""
    assert embed_dim % 4 == 0, "sincos embedding dim must be divisible by 4"
    grid_h = np.arange(grid_size, dtype=np.float64)
    grid_w = np.arange(grid_size, dtype=np.float64)
    grid = np.meshgrid(grid_w, grid_h)  # w goes first
    grid = np.stack(grid, axis=0).reshape([2, 1, grid_size, grid_size])
    emb_h = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[0])
    emb_w = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[1])
    emb = np.concatenate([emb_h, emb_w], axis=1)
    if cls_token:
        emb = np.concatenate([np.zeros([1, embed_dim]), emb], axis=0)
    return emb


def sincos_with_cls(dim, grid):
    """Fixed positions [1, 1 + grid*grid, dim], zero class-token row (float64 -> float32)."""
    e = get_2d_sincos_pos_embed(dim, grid, cls_token=True).astype(np.float32)
    return torch.from_numpy(e).unsqueeze(0)


def patchify(imgs, p):
    """[B, C, H, W] -> [B, L, p*p*C], patch pixels in (p, q, c) order."""
    b, c, h, w = imgs.shape
    gh, gw = h // p, w // p
    x = imgs.reshape(b, c, gh, p, gw, p)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(b, gh * gw, p * p * c)


class ImageEncoder(nn.Module):
    """`patch_embed.{weight,bias}` (a stride-p conv, weight [D, C, p, p]), `cls_token`,
    fixed `pos_embed` (a non-persistent buffer: not a parameter on either side), `encoder.*`."""

    def __init__(self, geometry, cfg):
        super().__init__()
        self.geometry = dict(geometry)
        p, c, d = geometry["patch"], geometry["channels"], cfg["dim"]
        grid = geometry["size"] // p
        self.patch_embed = nn.Conv2d(c, d, kernel_size=p, stride=p)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.register_buffer("pos_embed", sincos_with_cls(d, grid), persistent=False)
        self.encoder = Encoder(cfg)
        self.num_patches = grid * grid

    def embed_patches(self, imgs):
        x = self.patch_embed(imgs).flatten(2).transpose(1, 2)  # [B, L, D]
        return x + self.pos_embed[:, 1:, :]

    def encode_tokens(self, tokens):
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(tokens.shape[0], -1, -1)
        return self.encoder(torch.cat([cls, tokens], dim=1))

    def forward(self, imgs):
        """All patches visible: [B, C, H, W] -> [B, 1 + L, D]."""
        return self.encode_tokens(self.embed_patches(imgs))


# --------------------------------------------------------------------------------------------
# MAE (src/objective/mae.rs)
# --------------------------------------------------------------------------------------------


class MaeDecoder(nn.Module):
    """Names under `decoder.`: `embed`, `mask_token`, `blocks.*` (pre-norm stack whose final
    `norm` is MAE's decoder_norm), `pred`. The fixed positions are a non-persistent buffer."""

    def __init__(self, geometry, enc_cfg, dec_cfg):
        super().__init__()
        dd = dec_cfg["dim"]
        grid = geometry["size"] // geometry["patch"]
        patch_dim = geometry["patch"] ** 2 * geometry["channels"]
        self.embed = nn.Linear(enc_cfg["dim"], dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dd))
        self.register_buffer("pos_embed", sincos_with_cls(dd, grid), persistent=False)
        self.blocks = Encoder(dec_cfg)
        self.pred = nn.Linear(dd, patch_dim)


class Mae(nn.Module):
    def __init__(self, cfg):
        """cfg: {"geometry": {size, channels, patch}, "encoder": {...}, "decoder": {...},
        "mask_ratio": float, "norm_pix_loss": bool}"""
        super().__init__()
        if not 0.0 < cfg["mask_ratio"] < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), found {cfg['mask_ratio']}")
        self.cfg = cfg
        self.vit = ImageEncoder(cfg["geometry"], cfg["encoder"])
        self.decoder = MaeDecoder(cfg["geometry"], cfg["encoder"], cfg["decoder"])
        self.patch = cfg["geometry"]["patch"]

    def len_keep(self):
        # Same float arithmetic as Rust: (L as f64 * (1 - ratio)) as usize.
        return int(self.vit.num_patches * (1.0 - self.cfg["mask_ratio"]))

    def random_masking(self, x, noise):
        """x [B, L, D], noise [B, L] -> x_masked [B, keep, D], mask [B, L] (1 = removed),
        ids_restore [B, L] (int64). Ascending noise is kept; the sort is stable like ours."""
        b, l, d = x.shape
        keep = self.len_keep()
        ids_shuffle = torch.argsort(noise, dim=1, stable=True)
        ids_restore = torch.argsort(ids_shuffle, dim=1, stable=True)
        ids_keep = ids_shuffle[:, :keep]
        x_masked = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, d))
        mask = torch.ones(b, l, dtype=x.dtype, device=x.device)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        return x_masked, mask, ids_restore

    def forward_encoder(self, imgs, noise):
        x = self.vit.embed_patches(imgs)
        x, mask, ids_restore = self.random_masking(x, noise)
        return self.vit.encode_tokens(x), mask, ids_restore

    def forward_decoder(self, latent, ids_restore):
        dec = self.decoder
        x = dec.embed(latent)
        b, t, dd = x.shape
        l = ids_restore.shape[1]
        mask_tokens = dec.mask_token.expand(b, l + 1 - t, dd)
        x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)
        x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).expand(-1, -1, dd))  # unshuffle
        x = torch.cat([x[:, :1, :], x_], dim=1)
        x = x + dec.pos_embed
        x = dec.blocks(x)
        x = dec.pred(x)
        return x[:, 1:, :]

    def target(self, imgs):
        target = patchify(imgs, self.patch)
        if self.cfg["norm_pix_loss"]:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)  # unbiased, as MAE
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        return target

    def forward_loss(self, imgs, pred, mask):
        per_patch = ((pred - self.target(imgs)) ** 2).mean(dim=-1)  # [B, L]
        return (per_patch * mask).sum() / mask.sum()

    def forward(self, imgs, noise):
        """-> (loss, pred [B, L, p*p*C], mask [B, L], ids_restore [B, L])"""
        latent, mask, ids_restore = self.forward_encoder(imgs, noise)
        pred = self.forward_decoder(latent, ids_restore)
        loss = self.forward_loss(imgs, pred, mask)
        return loss, pred, mask, ids_restore


def init_like_pretext_(model, generator=None):
    """Initialisation of the same *kind* as ours (xavier-uniform linear and patch-embedding
    weights, zero biases, unit/zero LayerNorm, N(0, 0.02) tokens). Not bit-identical to
    `ParamStore` (a different RNG); used by the benchmark so both sides train a model in the
    same regime."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if name.endswith("_token"):
                p.normal_(0.0, 0.02, generator=generator)
            elif leaf == "bias":
                p.zero_()
            elif ".norm" in name or name.startswith("norm"):
                p.fill_(1.0)
            else:
                fan_out, fan_in = p.shape[0], p[0].numel()
                bound = math.sqrt(6.0 / (fan_in + fan_out))
                p.uniform_(-bound, bound, generator=generator)
