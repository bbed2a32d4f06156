#!/usr/bin/env python3
"""Independent float64 numpy forward pass over a mixattn .bin (docs/FORMAT.md).

Written from the team notes on the Hugging Face architectures
(docs/HF-SEMANTICS.md, sections 0, 1, 4 and 8; 4.5 for the mixture-of-experts
routers), not from the C code, so the two can check each other. Plain
full-sequence recomputation, no KV cache; MLA in the naive form (per-head K and
V decompressed from the latent); every token's experts evaluated one by one.

    python3 scripts/reference_forward.py MODEL.bin --tokens "1 2 3" --out logits.f32
    python3 scripts/reference_forward.py MODEL.bin --tokens "1 2 3" --greedy 24

As a module:

    import reference_forward as rf
    m = rf.load("model.bin")          # or pass the path straight to logits()
    lg = rf.logits(m, [1, 2, 3])      # np.ndarray [n, vocab_size], float64
"""
import argparse
import math
import sys

import numpy as np

import mixformat



class Model:
    """A checkpoint read once: header dict, layer dicts, float64 tensors."""

    def __init__(self, path):
        cfg, layers, tensors, _tok = mixformat.read_model(path)
        self.path = path
        self.cfg = cfg
        self.layers = layers
        self.t = {k: np.asarray(v, dtype=np.float64) for k, v in tensors.items()}


def load(path):
    return Model(path)


# --------------------------------------------------------------------------- pieces
def rmsnorm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def silu(z):
    return z / (1.0 + np.exp(-z))


def _get_mscale(scale, m=1.0):
    if scale <= 1.0:
        return 1.0
    return 0.1 * m * math.log(scale) + 1.0


def _yarn_factor(cfg):
    rs = cfg["rope_scaling"]
    f = float(rs["factor"])
    if f <= 0.0:  # HF: factor null -> max_position_embeddings / original
        f = cfg["max_seq_len"] / float(rs["original_max_position_embeddings"])
    return f


def rope_inv_freq(cfg, r):
    """inv_freq[j], j < r/2, and the cos/sin multiplier (docs/HF-SEMANTICS.md §1.3)."""
    theta = float(cfg["rope_theta"])
    rs = cfg["rope_scaling"]
    kind = rs["type"]
    j = np.arange(r // 2, dtype=np.float64)
    inv = theta ** (-2.0 * j / r)
    if kind == "none":
        return inv, 1.0
    if kind == "linear":
        return inv / float(rs["factor"]), 1.0
    if kind == "llama3":
        f = float(rs["factor"])
        lo, hi = float(rs["low_freq_factor"]), float(rs["high_freq_factor"])
        orig = float(rs["original_max_position_embeddings"])
        wl = 2.0 * math.pi / inv
        low_w, high_w = orig / lo, orig / hi
        out = np.where(wl > low_w, inv / f, inv)
        s = (orig / wl - lo) / (hi - lo)
        smooth = (1.0 - s) * out / f + s * out
        medium = ~(wl < high_w) & ~(wl > low_w)
        return np.where(medium, smooth, out), 1.0
    if kind == "yarn":
        f = _yarn_factor(cfg)
        orig = float(rs["original_max_position_embeddings"])
        beta_fast = float(rs["beta_fast"]) or 32.0
        beta_slow = float(rs["beta_slow"]) or 1.0
        pos_freq = theta ** (2.0 * j / r)
        extra = 1.0 / pos_freq
        inter = 1.0 / (f * pos_freq)

        def corr(n_rot):
            return r * math.log(orig / (n_rot * 2.0 * math.pi)) / (2.0 * math.log(theta))
        low = max(math.floor(corr(beta_fast)), 0)
        high = min(math.ceil(corr(beta_slow)), r - 1)
        if low == high:
            high += 0.001
        ramp = np.clip((j - low) / (high - low), 0.0, 1.0)
        inv = inter * ramp + extra * (1.0 - ramp)
        att = float(rs["attention_factor"])
        if att == 0.0:
            ms, ms_all = float(rs["mscale"]), float(rs["mscale_all_dim"])
            if ms and ms_all:
                att = _get_mscale(f, ms) / _get_mscale(f, ms_all)
            else:
                att = _get_mscale(f)
        return inv, att
    raise ValueError("unknown rope scaling %r" % (kind,))


def apply_rope(x, pos, inv_freq, att, pairing):
    """Rotate the last axis of x (width r = 2*len(inv_freq)); x: [n, ..., r]."""
    r = x.shape[-1]
    ang = pos[:, None] * inv_freq[None, :]                       # [n, r/2]
    shape = (x.shape[0],) + (1,) * (x.ndim - 2) + (r // 2,)
    cos = (np.cos(ang) * att).reshape(shape)
    sin = (np.sin(ang) * att).reshape(shape)
    out = np.empty_like(x)
    if pairing == "neox":      # j with j + r/2
        a, b = x[..., : r // 2], x[..., r // 2:]
        out[..., : r // 2] = a * cos - b * sin
        out[..., r // 2:] = b * cos + a * sin
    elif pairing == "interleaved":  # 2j with 2j+1
        a, b = x[..., 0::2], x[..., 1::2]
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = a * sin + b * cos
    else:
        raise ValueError("unknown rope pairing %r" % (pairing,))
    return out


def attention_mask(n, window):
    """True where query i may see key j: j <= i and, with a window W, j > i - W."""
    i = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    m = j <= i
    if window:
        m &= j > i - window
    return m


def softmax_masked(scores, mask):
    s = np.where(mask, scores, -np.inf)
    s = s - s.max(axis=-1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(axis=-1, keepdims=True)


def linear(x, w, b=None):
    y = x @ w.T
    return y if b is None else y + b


# --------------------------------------------------------------------------- layers
def gqa_attention(m, n_layer, L, h, pos, mask):
    t, p = m.t, "layers.%d." % n_layer
    n = h.shape[0]
    H, Hkv, d, r = L["n_heads"], L["n_kv_heads"], L["head_dim"], L["rope_dim"]
    q = linear(h, t[p + "wq"], t.get(p + "bq")).reshape(n, H, d)
    k = linear(h, t[p + "wk"], t.get(p + "bk")).reshape(n, Hkv, d)
    v = linear(h, t[p + "wv"], t.get(p + "bv")).reshape(n, Hkv, d)
    if L.get("qk_norm"):  # Qwen3: RMSNorm over each head's d values, before RoPE
        eps = float(m.cfg["norm_eps"])
        q = rmsnorm(q, t[p + "q_norm"], eps)
        k = rmsnorm(k, t[p + "k_norm"], eps)
    if r:
        inv, att = rope_inv_freq(m.cfg, r)
        q = q.copy()
        k = k.copy()
        q[..., :r] = apply_rope(q[..., :r], pos, inv, att, m.cfg["rope_pairing"])
        k[..., :r] = apply_rope(k[..., :r], pos, inv, att, m.cfg["rope_pairing"])
    group = H // Hkv
    kv_of = np.arange(H) // group                 # query head h reads KV head h // (H/Hkv)
    ks, vs = k[:, kv_of, :], v[:, kv_of, :]       # [n, H, d]
    scores = np.einsum("ihd,jhd->hij", q, ks) * d ** -0.5
    pr = softmax_masked(scores, mask[None])
    o = np.einsum("hij,jhd->ihd", pr, vs).reshape(n, H * d)
    return linear(o, t[p + "wo"], t.get(p + "bo"))


def mla_softmax_scale(cfg, L):
    dn, dr = L["qk_nope_head_dim"], L["qk_rope_head_dim"]
    scale = (dn + dr) ** -0.5
    rs = cfg["rope_scaling"]
    if rs["type"] != "none" and float(rs["mscale_all_dim"]):
        f = _yarn_factor(cfg) if rs["type"] == "yarn" else float(rs["factor"])
        mm = _get_mscale(f, float(rs["mscale_all_dim"]))
        scale *= mm * mm
    return scale


def mla_attention(m, n_layer, L, h, pos, mask):
    t, p = m.t, "layers.%d." % n_layer
    n = h.shape[0]
    H = L["n_heads"]
    dq, dc = L["q_lora_rank"], L["kv_lora_rank"]
    dn, dr, dv = L["qk_nope_head_dim"], L["qk_rope_head_dim"], L["v_head_dim"]
    if dq == 0:
        q = linear(h, t[p + "wq"], t.get(p + "bq"))
    else:
        qa = linear(h, t[p + "wq_a"], t.get(p + "bq_a"))
        q = linear(rmsnorm(qa, t[p + "q_a_norm"], mixformat.MLA_INNER_NORM_EPS), t[p + "wq_b"])
    q = q.reshape(n, H, dn + dr)
    q_nope, q_pe = q[..., :dn], q[..., dn:]
    kv = linear(h, t[p + "wkv_a"], t.get(p + "bkv_a"))
    c = rmsnorm(kv[:, :dc], t[p + "kv_a_norm"], mixformat.MLA_INNER_NORM_EPS)      # [n, dc]
    k_pe = kv[:, dc:]                                               # [n, dr], shared
    k_nope = np.einsum("hkc,nc->nhk", t[p + "w_uk"], c)             # [n, H, dn]
    v = np.einsum("hvc,nc->nhv", t[p + "w_uv"], c)                  # [n, H, dv]
    inv, att = rope_inv_freq(m.cfg, dr)
    q_pe = apply_rope(q_pe, pos, inv, att, m.cfg["rope_pairing"])
    k_pe = apply_rope(k_pe, pos, inv, att, m.cfg["rope_pairing"])
    scores = (np.einsum("ihd,jhd->hij", q_nope, k_nope)
              + np.einsum("ihd,jd->hij", q_pe, k_pe)) * mla_softmax_scale(m.cfg, L)
    pr = softmax_masked(scores, mask[None])
    o = np.einsum("hij,jhv->ihv", pr, v).reshape(n, H * dv)
    return linear(o, t[p + "wo"], t.get(p + "bo"))


def ffn(m, n_layer, h):
    t, p = m.t, "layers.%d." % n_layer
    g = linear(h, t[p + "w1"], t.get(p + "b1"))
    u = linear(h, t[p + "w3"], t.get(p + "b3"))
    return linear(silu(g) * u, t[p + "w2"], t.get(p + "b2"))


def route(L, z, bias):
    """One token's router (notes 4.5): logits z [E] -> (expert ids, weights).

    scores s = softmax(z) or sigmoid(z); the choice score is s (+ the correction
    bias, noaux_tc only, for choosing and nothing else). Experts form n_group
    contiguous groups; a group scores the max (group_limited_greedy) or the sum of
    its top-2 choice scores (noaux_tc); only the topk_group best groups stay, the
    others are masked with -inf (transformers 5.17); greedy keeps all. The top_k
    choice scores pick the experts; their weights are the unbiased s, normalised to
    sum 1 (+1e-20) if norm_topk_prob, then times routed_scaling_factor."""
    E, K = L["n_experts"], L["top_k"]
    if L["scoring"] == "softmax":
        e = np.exp(z - z.max())
        s = e / e.sum()
    elif L["scoring"] == "sigmoid":
        s = 1.0 / (1.0 + np.exp(-z))
    else:
        raise ValueError("unknown scoring %r" % (L["scoring"],))
    choice = s + bias if L["topk_method"] == "noaux_tc" else s.copy()
    G, TG = L["n_group"], L["topk_group"]
    if L["topk_method"] != "greedy":
        grouped = choice.reshape(G, E // G)
        if L["topk_method"] == "group_limited_greedy":
            gscore = grouped.max(axis=1)
        else:
            gscore = np.sort(grouped, axis=1)[:, ::-1][:, :2].sum(axis=1)
        keep = np.zeros(G, dtype=bool)
        keep[np.argsort(-gscore, kind="stable")[:TG]] = True
        choice = np.where(np.repeat(keep, E // G), choice, -np.inf)
    idx = np.argsort(-choice, kind="stable")[:K]
    w = s[idx]
    if L["norm_topk_prob"]:
        w = w / (w.sum() + 1e-20)
    return idx, w * float(L["routed_scaling_factor"])


def swiglu(x, w1, w3, w2):
    return (silu(x @ w1.T) * (x @ w3.T)) @ w2.T


def moe(m, n_layer, L, h):
    """y = sum_k w_k Expert_k(h) + Shared(h), token by token."""
    t, p = m.t, "layers.%d." % n_layer
    bias = t.get(p + "router_bias")
    w1, w3, w2 = t[p + "experts.w1"], t[p + "experts.w3"], t[p + "experts.w2"]
    out = np.zeros_like(h)
    for i in range(h.shape[0]):
        idx, w = route(L, t[p + "router"] @ h[i], bias)
        for e, we in zip(idx, w):
            out[i] += we * swiglu(h[i], w1[e], w3[e], w2[e])
    if L["shared_hidden"]:
        out += swiglu(h, t[p + "shared.w1"], t[p + "shared.w3"], t[p + "shared.w2"])
    return out


# --------------------------------------------------------------------------- model
def logits(model, ids):
    """Logits of every position of `ids` (no BOS added): float64 [len(ids), vocab_size]."""
    m = model if isinstance(model, Model) else load(model)
    cfg, t = m.cfg, m.t
    if cfg["activation"] != 0:
        raise ValueError("activation %d is not SiLU" % cfg["activation"])
    ids = np.asarray(list(ids), dtype=np.int64)
    if ids.ndim != 1 or ids.size == 0:
        raise ValueError("need a non-empty 1-D list of token ids")
    if ids.min() < 0 or ids.max() >= cfg["vocab_size"]:
        raise ValueError("token id out of range")
    n = ids.size
    pos = np.arange(n, dtype=np.float64)
    mask = attention_mask(n, cfg["sliding_window"])
    eps = float(cfg["norm_eps"])
    rsc = float(cfg["residual_scale"])
    x = t["tok_embeddings"][ids] * float(cfg["embed_scale"])
    for i, L in enumerate(m.layers):
        p = "layers.%d." % i
        h = rmsnorm(x, t[p + "attn_norm"], eps)
        if L["kind"] == "gqa":
            a = gqa_attention(m, i, L, h, pos, mask)
        elif L["kind"] == "mla":
            a = mla_attention(m, i, L, h, pos, mask)
        else:
            raise ValueError("layer %d: unknown kind %r" % (i, L["kind"]))
        x = x + rsc * a
        hn = rmsnorm(x, t[p + "ffn_norm"], eps)
        x = x + rsc * (moe(m, i, L, hn) if L.get("ffn") == "moe" else ffn(m, i, hn))
    x = rmsnorm(x, t["norm"], eps) * float(cfg["logit_scale"])
    head = t["tok_embeddings"] if cfg["tied"] else t["output"]
    return x @ head.T


def greedy(model, ids, n, eos_id=None):
    """Greedy continuation by full recomputation; stops after emitting eos_id if given."""
    m = model if isinstance(model, Model) else load(model)
    seq, out = list(ids), []
    for _ in range(n):
        nxt = int(np.argmax(logits(m, seq)[-1]))
        out.append(nxt)
        seq.append(nxt)
        if eos_id is not None and nxt == eos_id:
            break
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description="float64 reference forward over a mixattn .bin")
    ap.add_argument("model")
    ap.add_argument("--tokens", required=True, help='space-separated ids, e.g. "1 5 9"')
    ap.add_argument("--out", help="write float32 little-endian logits, n x vocab_size")
    ap.add_argument("--greedy", type=int, default=0, metavar="N",
                    help="print N greedy ids (stops after EOS)")
    a = ap.parse_args(argv)
    ids = [int(s) for s in a.tokens.replace(",", " ").split()]
    m = load(a.model)
    lg = logits(m, ids)
    if a.out:
        lg.astype("<f4").tofile(a.out)
    if a.greedy:
        eos = m.cfg["eos_id"] if m.cfg["eos_id"] >= 0 else None
        print(" ".join(map(str, greedy(m, ids, a.greedy, eos))))
    elif not a.out:
        print("last-position argmax:", int(np.argmax(lg[-1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
