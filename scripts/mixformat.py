"""The one writer (and a reader, for tests) of the .bin format in docs/FORMAT.md.

numpy and the standard library only. Every converter and training script
produces checkpoints through `write_model`.

    cfg = dict(dim=64, n_layers=2, vocab_size=300, max_seq_len=256, hidden_dim=128,
               norm_eps=1e-5, tied=False, bos_id=1, eos_id=2, rope_theta=10000.0,
               rope_pairing="neox")             # or "interleaved"
    layers = [dict(kind="gqa", n_heads=4, n_kv_heads=2, head_dim=16),
              dict(kind="mla", n_heads=4, q_lora_rank=0, kv_lora_rank=32,
                   qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16,
                   ffn="moe", n_experts=8, top_k=2, expert_hidden=32, shared_hidden=64,
                   scoring="softmax", topk_method="greedy", routed_scaling_factor=1.0)]
    write_model("out.bin", cfg, layers, tensors, tokenizer_bytes=b"...", dtype="bf16")

`tensors` maps the names of docs/FORMAT.md to float arrays of the listed shapes.
A layer's feed-forward is dense SwiGLU (`ffn="dense"`, the default, of width
`hidden_dim`: the layer's own, else the header's) or a mixture of experts
(`ffn="moe"`); the header's hidden_dim is written as the largest FFN width.
A tensor may be a lazy array-like with `.shape`; if it also has `iter_rows()`
(yielding consecutive slices along its first axis) it is encoded slice by slice,
so a stacked [E, I, D] expert tensor never has to be in memory at once.
"""
import fnmatch
import mmap
import os
import struct
import tempfile

import numpy as np

MAGIC = b"MIXATTN\0"
VERSION = 2          # version 1 files (no block types, 64-byte layers) are still read
HEADER_BYTES = 256
LAYER_BYTES = 128    # version 1: 64 (attention only; every FFN dense of hidden_dim)
LAYER_BYTES_V1 = 64
ENTRY_BYTES = 128
ALIGN = 64

DTYPES = {"f32": 0, "f16": 1, "bf16": 2, "q8_0": 3, "q4_0": 4}
# MLA's inner norms (q_a_norm, kv_a_norm) always use this epsilon, not norm_eps
# (docs/FORMAT.md; transformers builds them without passing eps: docs/HF-SEMANTICS.md §0).
# The C side: MLA_INNER_NORM_EPS in attention/attention.h.
MLA_INNER_NORM_EPS = 1e-6
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
DTYPE_SIZE = {0: 4, 1: 2, 2: 2}  # bytes per element of the plain types
# block types (ggml's layouts): 32 weights of a row share one f16 scale
QK = 32
BLOCK_BYTES = {"q8_0": 2 + 32, "q4_0": 2 + 16}
PAIRING = {"neox": 0, "interleaved": 1}
SCALING = {"none": 0, "linear": 1, "llama3": 2, "yarn": 3}
KIND = {"gqa": 0, "mla": 1}
FFN_KIND = {"dense": 0, "moe": 1}
SCORING = {"softmax": 0, "sigmoid": 1}
TOPK_METHOD = {"greedy": 0, "group_limited_greedy": 1, "noaux_tc": 2}
GQA_QK_NORM = 16     # GQA bias_flags bit 4: per-head RMSNorm of q and k (Qwen3)

# header: magic .. reserved(124), tokenizer offset/bytes
_HEADER = struct.Struct("<8s9Iiiff2I3fI5fI3f2I2Q2Q")  # ... tokenizer blob, tokenizer-config blob
TOKENIZER_KINDS = {"none": 0, "sentencepiece": 1, "hf": 2}  # header u32 at 124
_LAYER = struct.Struct("<11I")
_FFN = struct.Struct("<11If")        # at byte 64 of a version-2 layer descriptor
_ENTRY = struct.Struct("<64sII4QQQ")


class FormatError(ValueError):
    pass


# the runtime's limits (model/loader.c): a file outside them is refused at load,
# so the writer refuses it first, with the reason
MAX_SIZE = 1 << 24       # dim, vocab_size, max_seq_len, hidden_dim, sliding_window
MAX_LAYERS = 65536
MAX_HEADS = 65536        # heads and per-head sizes of a layer


def check_config(c):
    """Raise FormatError for a header the loader would reject (c from defaults())."""
    for key in ("dim", "vocab_size", "max_seq_len", "hidden_dim"):
        v = c[key]
        if not isinstance(v, (int, np.integer)) or not 1 <= v <= MAX_SIZE:
            raise FormatError("%s %r is outside what the runtime accepts [1, %d]"
                              % (key, v, MAX_SIZE))
    if not 1 <= c["n_layers"] <= MAX_LAYERS:
        raise FormatError("n_layers %r is outside [1, %d]" % (c["n_layers"], MAX_LAYERS))
    if not 0 <= c["sliding_window"] <= MAX_SIZE:
        raise FormatError("sliding_window %r is outside [0, %d]" % (c["sliding_window"], MAX_SIZE))
    for key in ("bos_id", "eos_id"):
        v = c[key]
        if not -1 <= v < c["vocab_size"]:
            raise FormatError("%s %d is outside the vocabulary [0, %d) (and not -1 = none)"
                              % (key, v, c["vocab_size"]))


def check_finite(name, a, row0=0):
    """Raise FormatError naming the tensor if it holds NaN or Inf (a may be rows
    row0.. of it: the index reported is the tensor's)."""
    a = np.asarray(a)
    bad = ~np.isfinite(a)
    if bad.any():
        first = np.unravel_index(int(np.argmax(bad)), a.shape) if a.ndim else ()
        if a.ndim:
            first = (first[0] + row0,) + tuple(first[1:])
        raise FormatError("tensor %s holds %d non-finite values (%d NaN, %d Inf; first at %s)"
                          % (name, int(bad.sum()), int(np.isnan(a).sum()),
                             int(np.isinf(a).sum()), list(int(i) for i in first)))


def _align(n):
    return (n + ALIGN - 1) // ALIGN * ALIGN


def defaults(cfg):
    """Fill in optional header fields."""
    c = dict(activation=0, tied=False, mlp_bias=False, bos_id=-1, eos_id=-1,
             rope_theta=10000.0, rope_pairing="neox", sliding_window=0,
             embed_scale=1.0, residual_scale=1.0, logit_scale=1.0)
    c.update(cfg)
    rs = dict(type="none", factor=1.0, low_freq_factor=0.0, high_freq_factor=0.0,
              original_max_position_embeddings=0, beta_fast=32.0, beta_slow=1.0,
              mscale=0.0, mscale_all_dim=0.0, attention_factor=0.0)
    rs.update(c.get("rope_scaling") or {})
    c["rope_scaling"] = rs
    return c


def ffn_defaults(layer, cfg_hidden=None):
    """The feed-forward part of a layer dict, defaults filled in and checked."""
    f = dict(ffn="dense", hidden_dim=cfg_hidden, n_experts=0, top_k=0, expert_hidden=0,
             shared_hidden=0, scoring="softmax", topk_method="greedy", n_group=1,
             topk_group=1, norm_topk_prob=False, routed_scaling_factor=1.0)
    f.update({k: v for k, v in layer.items() if k in f})
    if f["ffn"] not in FFN_KIND:
        raise FormatError("unknown feed-forward kind %r" % (f["ffn"],))
    if f["ffn"] == "dense":
        if not f["hidden_dim"] or f["hidden_dim"] < 1:
            raise FormatError("dense feed-forward without a hidden_dim")
        return f
    f["hidden_dim"] = 0
    if f["scoring"] not in SCORING:
        raise FormatError("unknown router scoring %r" % (f["scoring"],))
    if f["topk_method"] not in TOPK_METHOD:
        raise FormatError("unknown routing method %r" % (f["topk_method"],))
    E, K, G, TG = f["n_experts"], f["top_k"], f["n_group"], f["topk_group"]
    if E < 1 or f["expert_hidden"] < 1 or K < 1:
        raise FormatError("mixture of experts needs n_experts, top_k and expert_hidden >= 1")
    if K > E:
        raise FormatError("top_k %d > n_experts %d" % (K, E))
    if G < 1 or E % G:
        raise FormatError("n_experts %d is not divisible by n_group %d" % (E, G))
    if TG < 1 or TG > G:
        raise FormatError("topk_group %d must be in [1, n_group %d]" % (TG, G))
    if f["topk_method"] == "greedy" and (G != 1 or TG != 1):
        raise FormatError("greedy routing takes n_group = topk_group = 1")
    if K > TG * (E // G):
        raise FormatError("top_k %d is more than the %d experts of %d kept groups"
                          % (K, TG * (E // G), TG))
    if f["topk_method"] == "noaux_tc" and E // G < 2:
        raise FormatError("noaux_tc needs at least 2 experts per group")
    return f


def ffn_width(f):
    return f["hidden_dim"] if f["ffn"] == "dense" else max(f["expert_hidden"], f["shared_hidden"])


def layer_defaults(layer):
    if layer["kind"] == "gqa":
        l = dict(n_kv_heads=layer["n_heads"], rope_dim=layer.get("head_dim"),
                 q_bias=False, k_bias=False, v_bias=False, o_bias=False, qk_norm=False)
        l.update(layer)
        if l["rope_dim"] is None:
            l["rope_dim"] = l["head_dim"]
    elif layer["kind"] == "mla":
        l = dict(q_lora_rank=0, q_bias=False, kv_bias=False, o_bias=False)
        l.update(layer)
        l["rope_dim"] = l["qk_rope_head_dim"]
    else:
        raise FormatError("unknown attention kind %r" % (layer["kind"],))
    return l


def expected_tensors(cfg, layers):
    """name -> shape, the exact set docs/FORMAT.md requires."""
    c = defaults(cfg)
    D, V = c["dim"], c["vocab_size"]
    shapes = {"tok_embeddings": (V, D), "norm": (D,)}
    if not c["tied"]:
        shapes["output"] = (V, D)
    for n, layer in enumerate(layers):
        l = layer_defaults(layer)
        f = ffn_defaults(layer, c["hidden_dim"])
        p = "layers.%d." % n
        shapes[p + "attn_norm"] = (D,)
        shapes[p + "ffn_norm"] = (D,)
        if f["ffn"] == "dense":
            I = f["hidden_dim"]
            shapes[p + "w1"] = (I, D)
            shapes[p + "w3"] = (I, D)
            shapes[p + "w2"] = (D, I)
            if c["mlp_bias"]:
                shapes[p + "b1"] = (I,)
                shapes[p + "b3"] = (I,)
                shapes[p + "b2"] = (D,)
        else:
            E, Ie, Is = f["n_experts"], f["expert_hidden"], f["shared_hidden"]
            shapes[p + "router"] = (E, D)
            if f["topk_method"] == "noaux_tc":
                shapes[p + "router_bias"] = (E,)
            shapes[p + "experts.w1"] = (E, Ie, D)
            shapes[p + "experts.w3"] = (E, Ie, D)
            shapes[p + "experts.w2"] = (E, D, Ie)
            if Is:
                shapes[p + "shared.w1"] = (Is, D)
                shapes[p + "shared.w3"] = (Is, D)
                shapes[p + "shared.w2"] = (D, Is)
        H = l["n_heads"]
        if l["kind"] == "gqa":
            d, Hkv = l["head_dim"], l["n_kv_heads"]
            shapes[p + "wq"] = (H * d, D)
            shapes[p + "wk"] = (Hkv * d, D)
            shapes[p + "wv"] = (Hkv * d, D)
            shapes[p + "wo"] = (D, H * d)
            if l["q_bias"]:
                shapes[p + "bq"] = (H * d,)
            if l["k_bias"]:
                shapes[p + "bk"] = (Hkv * d,)
            if l["v_bias"]:
                shapes[p + "bv"] = (Hkv * d,)
            if l["o_bias"]:
                shapes[p + "bo"] = (D,)
            if l["qk_norm"]:
                shapes[p + "q_norm"] = (d,)
                shapes[p + "k_norm"] = (d,)
        else:
            dq, dc = l["q_lora_rank"], l["kv_lora_rank"]
            dn, dr, dv = l["qk_nope_head_dim"], l["qk_rope_head_dim"], l["v_head_dim"]
            if dq == 0:
                shapes[p + "wq"] = (H * (dn + dr), D)
                if l["q_bias"]:
                    shapes[p + "bq"] = (H * (dn + dr),)
            else:
                shapes[p + "wq_a"] = (dq, D)
                if l["q_bias"]:
                    shapes[p + "bq_a"] = (dq,)
                shapes[p + "q_a_norm"] = (dq,)
                shapes[p + "wq_b"] = (H * (dn + dr), dq)
            shapes[p + "wkv_a"] = (dc + dr, D)
            if l["kv_bias"]:
                shapes[p + "bkv_a"] = (dc + dr,)
            shapes[p + "kv_a_norm"] = (dc,)
            shapes[p + "w_uk"] = (H, dn, dc)
            shapes[p + "w_uv"] = (H, dv, dc)
            shapes[p + "wo"] = (D, H * dv)
            if l["o_bias"]:
                shapes[p + "bo"] = (D,)
    return shapes


def to_bf16_bits(a):
    """float32 array -> uint16 bf16 bits, round to nearest even (as torch does)."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    u = a.view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    nan = np.isnan(a)
    out = rounded.astype(np.uint16)
    out[nan] = 0x7FC0
    return out


def from_bf16_bits(b):
    return (np.asarray(b, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def row_bytes(dtype, cols):
    """Bytes of one row of `cols` values (the last dimension)."""
    if dtype in BLOCK_BYTES:
        if cols % QK:
            raise FormatError("%s needs rows of a multiple of %d values, got %d" % (dtype, QK, cols))
        return cols // QK * BLOCK_BYTES[dtype]
    return cols * DTYPE_SIZE[DTYPES[dtype]]


def tensor_bytes(dtype, shape):
    rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    return rows * row_bytes(dtype, int(shape[-1]))


def _blocks(a):
    a = np.ascontiguousarray(a, dtype=np.float32)
    if a.size % QK:
        raise FormatError("block types need a multiple of %d values per row" % QK)
    if not np.all(np.isfinite(a)):
        raise FormatError("cannot quantize non-finite values")
    return a.reshape(-1, QK)


def quantize_q8_0(a):
    """float32 values (rows of a multiple of 32) -> q8_0 bytes, bit for bit ggml's
    reference quantize_row_q8_0 (and kernels/ C's): per block of 32,
    d = max|x| / 127, q = roundf(x * (1/d)) (halves away from zero), d stored as f16."""
    x = _blocks(a)
    amax = np.max(np.abs(x), axis=1)
    d = amax / np.float32(127)
    with np.errstate(divide="ignore"):
        inv = np.where(d != 0, np.float32(1) / d, np.float32(0)).astype(np.float32)
    v = (x * inv[:, None]).astype(np.float64)          # the f32 product, exactly
    q = (np.sign(v) * np.floor(np.abs(v) + 0.5)).astype(np.int8)  # roundf
    out = np.empty((x.shape[0], 34), dtype=np.uint8)
    out[:, :2] = d.astype("<f2").view(np.uint8).reshape(-1, 2)
    out[:, 2:] = q.view(np.uint8)
    return out.tobytes()


def quantize_q4_0(a):
    """float32 values -> q4_0 bytes, bit for bit ggml's reference quantize_row_q4_0:
    per block, m = the value of largest magnitude (the first one), d = m / -8,
    q = min(15, (int)(x * (1/d) + 8.5)); byte j holds q[j] (low nibble) and q[j+16]
    (high nibble); d stored as f16. Dequantized: (q - 8) * d."""
    x = _blocks(a)
    idx = np.argmax(np.abs(x), axis=1)
    m = x[np.arange(x.shape[0]), idx]
    d = m / np.float32(-8)
    with np.errstate(divide="ignore"):
        inv = np.where(d != 0, np.float32(1) / d, np.float32(0)).astype(np.float32)
    v = x * inv[:, None] + np.float32(8.5)              # two f32 roundings, as in C
    q = np.minimum(15, np.trunc(v)).astype(np.uint8)
    out = np.empty((x.shape[0], 18), dtype=np.uint8)
    out[:, :2] = d.astype("<f2").view(np.uint8).reshape(-1, 2)
    out[:, 2:] = q[:, :16] | (q[:, 16:] << 4)
    return out.tobytes()


def dequantize(raw, dtype, shape):
    """bytes of one tensor -> float32 array of `shape` (every type)."""
    if dtype == "f32":
        a = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    elif dtype == "f16":
        a = np.frombuffer(raw, dtype="<f2").astype(np.float32)
    elif dtype == "bf16":
        a = from_bf16_bits(np.frombuffer(raw, dtype="<u2"))
    elif dtype in BLOCK_BYTES:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, BLOCK_BYTES[dtype])
        d = b[:, :2].copy().view("<f2").astype(np.float32)  # [blocks, 1]
        if dtype == "q8_0":
            q = b[:, 2:].view(np.int8).astype(np.float32)
        else:
            lo, hi = b[:, 2:] & 15, b[:, 2:] >> 4
            q = np.concatenate([lo, hi], axis=1).astype(np.float32) - 8
        a = (q * d).astype(np.float32)
    else:
        raise FormatError("unknown dtype %r" % (dtype,))
    return a.reshape(shape)


def encode(a, dtype):
    a = np.asarray(a, dtype=np.float32)
    if dtype == "q8_0":
        return quantize_q8_0(a)
    if dtype == "q4_0":
        return quantize_q4_0(a)
    if dtype == "f32":
        return np.ascontiguousarray(a, dtype="<f4").tobytes()
    if dtype == "f16":
        return np.ascontiguousarray(a, dtype="<f2").tobytes()
    if dtype == "bf16":
        return to_bf16_bits(a).astype("<u2").tobytes()
    raise FormatError("unknown dtype %r" % (dtype,))


def pack_tokenizer_config(records):
    """The tokenizer-config blob of docs/FORMAT.md from {key: bytes}: b"TKCF", u32 version 1,
    u32 count, then per record u32 key length, key (ASCII), u32 value length, value."""
    out = [b"TKCF", struct.pack("<II", 1, len(records))]
    for key in sorted(records):
        k, v = key.encode("ascii"), bytes(records[key])
        out += [struct.pack("<I", len(k)), k, struct.pack("<I", len(v)), v]
    return b"".join(out)


def unpack_tokenizer_config(blob):
    """{key: bytes} from a tokenizer-config blob (FormatError if malformed)."""
    if len(blob) < 12 or blob[:4] != b"TKCF":
        raise FormatError("tokenizer-config blob: bad magic")
    version, count = struct.unpack_from("<II", blob, 4)
    if version != 1:
        raise FormatError("tokenizer-config blob: unknown version %d" % version)
    at, out = 12, {}
    for _ in range(count):
        if at + 4 > len(blob):
            raise FormatError("tokenizer-config blob: truncated")
        (kl,) = struct.unpack_from("<I", blob, at)
        key = blob[at + 4:at + 4 + kl]
        if at + 8 + kl > len(blob):
            raise FormatError("tokenizer-config blob: truncated")
        (vl,) = struct.unpack_from("<I", blob, at + 4 + kl)
        if at + 8 + kl + vl > len(blob):
            raise FormatError("tokenizer-config blob: truncated")
        out[key.decode("ascii")] = blob[at + 8 + kl:at + 8 + kl + vl]
        at += 8 + kl + vl
    if at != len(blob):
        raise FormatError("tokenizer-config blob: trailing bytes")
    return out


def _pack_header(c, n_tensors, tok_off, tok_bytes, tok_kind=0, cfg_off=0, cfg_bytes=0):
    rs = c["rope_scaling"]
    if rs["type"] not in SCALING:
        raise FormatError("unknown rope scaling type %r" % (rs["type"],))
    if c["rope_pairing"] not in PAIRING:
        raise FormatError("unknown rope pairing %r" % (c["rope_pairing"],))
    flags = (1 if c["tied"] else 0) | (2 if c["mlp_bias"] else 0)
    return _HEADER.pack(
        MAGIC, VERSION, HEADER_BYTES, c["dim"], c["n_layers"], c["vocab_size"],
        c["max_seq_len"], c["hidden_dim"], c["activation"], flags,
        c["bos_id"], c["eos_id"], c["norm_eps"], c["rope_theta"],
        PAIRING[c["rope_pairing"]], SCALING[rs["type"]], rs["factor"],
        rs["low_freq_factor"], rs["high_freq_factor"],
        int(rs["original_max_position_embeddings"] or 0),
        rs["beta_fast"], rs["beta_slow"], rs["mscale"] or 0.0,
        rs["mscale_all_dim"] or 0.0, rs["attention_factor"] or 0.0,
        c["sliding_window"] or 0, c["embed_scale"], c["residual_scale"],
        c["logit_scale"], n_tensors, tok_kind, tok_off, tok_bytes, cfg_off, cfg_bytes,
    ).ljust(HEADER_BYTES, b"\0")


def _pack_layer(layer, cfg_hidden):
    l = layer_defaults(layer)
    f = ffn_defaults(layer, cfg_hidden)
    if l["kind"] == "gqa":
        bias = (1 if l["q_bias"] else 0) | (2 if l["k_bias"] else 0) | \
               (4 if l["v_bias"] else 0) | (8 if l["o_bias"] else 0) | \
               (GQA_QK_NORM if l["qk_norm"] else 0)
        vals = (0, l["n_heads"], l["n_kv_heads"], l["head_dim"], l["rope_dim"], bias,
                0, 0, 0, 0, 0)
    else:
        bias = (1 if l["q_bias"] else 0) | (2 if l["kv_bias"] else 0) | (8 if l["o_bias"] else 0)
        vals = (1, l["n_heads"], 0, 0, l["rope_dim"], bias, l["q_lora_rank"],
                l["kv_lora_rank"], l["qk_nope_head_dim"], l["qk_rope_head_dim"],
                l["v_head_dim"])
    ffn = _FFN.pack(FFN_KIND[f["ffn"]], f["hidden_dim"], f["n_experts"], f["top_k"],
                    f["expert_hidden"], f["shared_hidden"], SCORING[f["scoring"]],
                    TOPK_METHOD[f["topk_method"]], f["n_group"], f["topk_group"],
                    1 if f["norm_topk_prob"] else 0, float(f["routed_scaling_factor"]))
    return _LAYER.pack(*vals).ljust(64, b"\0") + ffn.ljust(LAYER_BYTES - 64, b"\0")


def storage_dtype(name, shape, dtype, overrides=None):
    """The dtype a tensor is stored in when a checkpoint is written "in `dtype`".

    1-D tensors (norms, biases) stay f32. A block type (q8_0, q4_0) needs rows of a
    multiple of 32 values; a matrix whose rows are not falls back to bf16.
    `overrides` maps fnmatch patterns of names to dtypes and wins over both
    (e.g. {"output": "q8_0", "*.w_uk": "bf16"}); the first matching pattern is used."""
    for pattern, dt in (overrides or {}).items():
        if fnmatch.fnmatchcase(name, pattern):
            if dt not in DTYPES:
                raise FormatError("unknown dtype %r for %s" % (dt, pattern))
            if dt in BLOCK_BYTES and shape[-1] % QK:
                raise FormatError("tensor %s: rows of %d values cannot be stored as %s (needs a "
                                  "multiple of %d)" % (name, shape[-1], dt, QK))
            return dt
    if dtype not in DTYPES:
        raise FormatError("unknown dtype %r" % (dtype,))
    if len(shape) == 1:
        return "f32"
    if dtype in BLOCK_BYTES and shape[-1] % QK:
        return "bf16"
    return dtype


def default_overrides(dtype, cfg):
    """Tensors writers keep at higher precision when storing a model "in `dtype`"
    (measured in docs/QUANT.md): with q4_0 the output head (`output`, or the tied
    `tok_embeddings`) is q8_0. Norms and biases are f32 in any case (storage_dtype)."""
    if dtype != "q4_0":
        return {}
    return {"tok_embeddings" if cfg.get("tied") else "output": "q8_0"}


class StoredTensor:
    """A tensor of a checkpoint on disk, decoded to float32 only when asked (whole, or
    a range of its first axis), so that re-encoding streams tensor by tensor."""

    def __init__(self, buf, offset, nbytes, dtype, shape):
        self._buf, self._off, self.nbytes = buf, offset, nbytes
        self.dtype, self.shape = dtype, tuple(shape)

    def rows(self, lo, hi):
        """float32 values of [lo, hi) along the first axis."""
        if len(self.shape) == 1:
            return np.asarray(self)[lo:hi]
        per = tensor_bytes(self.dtype, (1,) + self.shape[1:])
        raw = self._buf[self._off + lo * per:self._off + hi * per]
        return dequantize(raw, self.dtype, (hi - lo,) + self.shape[1:])

    def __array__(self, dtype=None, copy=None):
        a = dequantize(self._buf[self._off:self._off + self.nbytes], self.dtype, self.shape)
        return a if dtype is None else a.astype(dtype, copy=False)


CHUNK_VALUES = 1 << 22  # values encoded at once: bounds a writer's memory for huge tensors


def encode_chunks(t, dtype, shape, check_name=None):
    """Encode tensor `t` (an array, a StoredTensor or any array-like) in pieces of at
    most ~CHUNK_VALUES values along its first axis; yields bytes. An object with an
    `encoded(lo, hi, dtype)` method supplies the stored bytes of rows [lo, hi) itself.
    With check_name, a piece holding NaN or Inf raises FormatError naming that tensor."""
    if hasattr(t, "iter_rows"):  # stacked experts, one at a time (bounded memory)
        for part in t.iter_rows():
            part = np.asarray(part, dtype=np.float32)
            if check_name is not None:
                check_finite(check_name, part)
            yield encode(part, dtype)
        return
    per_row = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    step = max(1, CHUNK_VALUES // max(per_row, 1))
    if hasattr(t, "encoded"):  # a generator that makes the stored bytes itself (bench/)
        for lo in range(0, shape[0], step):
            yield t.encoded(lo, min(shape[0], lo + step), dtype)
        return
    if len(shape) == 1 or shape[0] <= step:
        a = np.asarray(t, dtype=np.float32)
        if check_name is not None:
            check_finite(check_name, a)
        yield encode(a, dtype)
        return
    for lo in range(0, shape[0], step):
        hi = min(shape[0], lo + step)
        if hasattr(t, "rows"):
            part = t.rows(lo, hi)
        elif isinstance(t, np.ndarray):
            part = t[lo:hi]
        else:  # a lazy array-like: materialise once, then slice
            t = np.asarray(t)
            part = t[lo:hi]
        if check_name is not None:
            part = np.asarray(part, dtype=np.float32)
            check_finite(check_name, part, row0=lo)
        yield encode(part, dtype)


def write_model(path, cfg, layers, tensors, tokenizer_bytes=None, dtype="f32",
                dtypes=None, overrides=None, tokenizer_kind=None, tokenizer_config=None,
                allow_nonfinite=False):
    """Validate against docs/FORMAT.md and write atomically (temp file + rename).

    dtype: default storage dtype (see storage_dtype: 1-D tensors stay f32, block types
    fall back to bf16 for rows that are not a multiple of 32); `dtypes` maps exact
    names to a dtype, `overrides` fnmatch patterns. On any error (or a signal that
    raises, e.g. KeyboardInterrupt) the temp file is removed and `path` is untouched. A tensor holding
    NaN or Inf is refused (FormatError naming it) unless allow_nonfinite (for tests
    of the runtime's own checks)."""
    c = defaults(cfg)
    check_config(c)
    if c["n_layers"] != len(layers):
        raise FormatError("n_layers is %d but %d layer descriptors given"
                          % (c["n_layers"], len(layers)))
    want = expected_tensors(c, layers)
    layer_hidden = c["hidden_dim"]
    # the header's hidden_dim: the largest FFN width of any layer (docs/FORMAT.md)
    c["hidden_dim"] = max(ffn_width(ffn_defaults(l, layer_hidden)) for l in layers)
    routers = [n for n in want if n.endswith((".router", ".router_bias"))]
    for name in routers:  # routing is a discrete choice: the router stays f32
        dt = (dtypes or {}).get(name, "f32")
        if dt != "f32":
            raise FormatError("router tensor %s must be f32, not %s" % (name, dt))
    dtypes = dict(dtypes or {}, **{name: "f32" for name in routers})
    got = set(tensors)
    missing = sorted(set(want) - got)
    extra = sorted(got - set(want))
    if missing:
        raise FormatError("missing tensor %s" % missing[0])
    if extra:
        raise FormatError("unexpected tensor %s" % extra[0])
    for name, shape in want.items():
        if tuple(np.shape(tensors[name])) != tuple(shape):
            raise FormatError("tensor %s has shape %s, expected %s"
                              % (name, tuple(np.shape(tensors[name])), tuple(shape)))
    names = list(want)  # deterministic order
    tok = tokenizer_bytes or b""
    # tokenizer_kind: "sentencepiece" (the default with tokenizer bytes) or "hf" (tokenizer.json);
    # tokenizer_config: {key: bytes} records for the tokenizer-config blob (needs a tokenizer)
    kind_name = tokenizer_kind or ("sentencepiece" if tok else "none")
    if kind_name not in TOKENIZER_KINDS or (TOKENIZER_KINDS[kind_name] == 0) != (not tok):
        raise FormatError("tokenizer_kind %r does not fit %d tokenizer bytes" % (tokenizer_kind, len(tok)))
    tcfg = pack_tokenizer_config(tokenizer_config) if tokenizer_config else b""
    if tcfg and not tok:
        raise FormatError("a tokenizer config needs an embedded tokenizer")
    dir_off = HEADER_BYTES + LAYER_BYTES * len(layers)  # version 2: 128-byte descriptors
    tok_off = _align(dir_off + ENTRY_BYTES * len(names))
    cfg_off = _align(tok_off + len(tok))
    off = _align(cfg_off + len(tcfg))
    entries, plan = [], []
    for name in names:
        if dtypes and name in dtypes:
            dt = dtypes[name]
            if dt not in DTYPES:
                raise FormatError("unknown dtype %r" % (dt,))
        else:
            dt = storage_dtype(name, want[name], dtype, overrides)
        nbytes = tensor_bytes(dt, want[name])
        shape = list(want[name]) + [0] * (4 - len(want[name]))
        if len(name.encode()) >= 64:
            raise FormatError("tensor name too long: %s" % name)
        entries.append(_ENTRY.pack(name.encode().ljust(64, b"\0"), DTYPES[dt],
                                   len(want[name]), *shape, off, nbytes)
                       .ljust(ENTRY_BYTES, b"\0"))
        plan.append((name, dt, off, nbytes))
        off = _align(off + nbytes)
    # tensors are encoded a piece at a time while writing, so peak memory stays near
    # one chunk even for multi-GB checkpoints (tensors may be lazy array-likes)
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=".bin")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_pack_header(c, len(names), tok_off if tok else 0, len(tok),
                                 TOKENIZER_KINDS[kind_name], cfg_off if tcfg else 0, len(tcfg)))
            for layer in layers:
                f.write(_pack_layer(layer, layer_hidden))
            f.write(b"".join(entries))
            f.write(b"\0" * (tok_off - f.tell()))
            f.write(tok)
            f.write(b"\0" * (cfg_off - f.tell()))
            f.write(tcfg)
            for name, dt, o, nbytes in plan:
                f.write(b"\0" * (o - f.tell()))
                written = 0
                for data in encode_chunks(tensors[name], dt, want[name],
                                          None if allow_nonfinite else name):
                    f.write(data)
                    written += len(data)
                if written != nbytes:
                    raise FormatError("tensor %s encoded to %d bytes, expected %d"
                                      % (name, written, nbytes))
        os.chmod(tmp, 0o644)  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def open_model(path):
    """Parse a .bin lazily: (cfg, layers, {name: StoredTensor}, tokenizer bytes).

    The file is memory-mapped; tensors decode only when used. A reader for tools
    and tests; the C loader is the one that validates hostile files."""
    with open(path, "rb") as f:
        try:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # empty file
            raise FormatError("%s is empty" % path)
    if len(buf) < HEADER_BYTES:
        raise FormatError("%s is too short for a header" % path)
    h = _HEADER.unpack_from(buf, 0)
    if h[0] != MAGIC:
        raise FormatError("bad magic")
    (_, version, _, dim, n_layers, vocab, max_seq, hidden, act, flags, bos, eos, eps,
     theta, pairing, scaling, factor, lff, hff, orig, bfast, bslow, msc, msc_all, attf,
     sw, es, rsc, lsc, n_tensors, _, tok_off, tok_bytes, _, _) = h
    if version not in (1, VERSION):
        raise FormatError("unsupported format version %d" % version)
    cfg = dict(dim=dim, n_layers=n_layers, vocab_size=vocab, max_seq_len=max_seq,
               hidden_dim=hidden, activation=act, tied=bool(flags & 1),
               mlp_bias=bool(flags & 2), bos_id=bos, eos_id=eos, norm_eps=eps,
               rope_theta=theta, rope_pairing={v: k for k, v in PAIRING.items()}[pairing],
               rope_scaling=dict(type={v: k for k, v in SCALING.items()}[scaling],
                                 factor=factor, low_freq_factor=lff, high_freq_factor=hff,
                                 original_max_position_embeddings=orig, beta_fast=bfast,
                                 beta_slow=bslow, mscale=msc, mscale_all_dim=msc_all,
                                 attention_factor=attf),
               sliding_window=sw, embed_scale=es, residual_scale=rsc, logit_scale=lsc)
    layers = []
    lbytes = LAYER_BYTES_V1 if version == 1 else LAYER_BYTES
    for n in range(n_layers):
        v = _LAYER.unpack_from(buf, HEADER_BYTES + n * lbytes)
        if v[0] == 0:
            l = dict(kind="gqa", n_heads=v[1], n_kv_heads=v[2], head_dim=v[3],
                     rope_dim=v[4], q_bias=bool(v[5] & 1), k_bias=bool(v[5] & 2),
                     v_bias=bool(v[5] & 4), o_bias=bool(v[5] & 8),
                     qk_norm=bool(v[5] & GQA_QK_NORM))
        else:
            l = dict(kind="mla", n_heads=v[1], q_lora_rank=v[6],
                     kv_lora_rank=v[7], qk_nope_head_dim=v[8],
                     qk_rope_head_dim=v[9], v_head_dim=v[10],
                     q_bias=bool(v[5] & 1), kv_bias=bool(v[5] & 2),
                     o_bias=bool(v[5] & 8))
        if version == 1:
            l.update(ffn="dense", hidden_dim=hidden)
        else:
            u = _FFN.unpack_from(buf, HEADER_BYTES + n * lbytes + 64)
            inv = lambda d, x: {b: a for a, b in d.items()}[x]  # noqa: E731
            l.update(ffn=inv(FFN_KIND, u[0]), hidden_dim=u[1], n_experts=u[2], top_k=u[3],
                     expert_hidden=u[4], shared_hidden=u[5], scoring=inv(SCORING, u[6]),
                     topk_method=inv(TOPK_METHOD, u[7]), n_group=u[8], topk_group=u[9],
                     norm_topk_prob=bool(u[10] & 1), routed_scaling_factor=u[11])
        layers.append(l)
    tensors = {}
    dir_off = HEADER_BYTES + lbytes * n_layers
    for i in range(n_tensors):
        e = _ENTRY.unpack_from(buf, dir_off + i * ENTRY_BYTES)
        name = e[0].split(b"\0", 1)[0].decode()
        dt, ndim, shape, off, nbytes = e[1], e[2], e[3:3 + e[2]], e[7], e[8]
        if dt not in DTYPE_NAMES:
            raise FormatError("tensor %s: unknown dtype %d" % (name, dt))
        if off + nbytes > len(buf) or nbytes != tensor_bytes(DTYPE_NAMES[dt], shape):
            raise FormatError("tensor %s: bad size or offset" % name)
        tensors[name] = StoredTensor(buf, off, nbytes, DTYPE_NAMES[dt], shape)
    tok = bytes(buf[tok_off:tok_off + tok_bytes]) if tok_bytes else b""
    return cfg, layers, tensors, tok


def read_tokenizer(path):
    """(kind name, tokenizer bytes, {key: bytes} of the tokenizer-config blob) of a .bin."""
    with open(path, "rb") as f:
        buf = f.read(HEADER_BYTES)
        h = _HEADER.unpack_from(buf, 0)
        if h[0] != MAGIC:
            raise FormatError("bad magic")
        version, kind, tok_off, tok_bytes, cfg_off, cfg_bytes = h[1], h[-5], h[-4], h[-3], h[-2], h[-1]
        if version < 2:
            kind, cfg_bytes = (1 if tok_bytes else 0), 0
        f.seek(tok_off)
        tok = f.read(tok_bytes) if tok_bytes else b""
        f.seek(cfg_off)
        cfg = unpack_tokenizer_config(f.read(cfg_bytes)) if cfg_bytes else {}
    names = {v: k for k, v in TOKENIZER_KINDS.items()}
    return names.get(kind, kind), tok, cfg


def read_model(path):
    """Parse a .bin into (cfg, layers, tensors as float32 arrays, tokenizer bytes)."""
    cfg, layers, stored, tok = open_model(path)
    return cfg, layers, {k: np.asarray(t) for k, t in stored.items()}, tok


def stored_dtypes(path):
    """name -> dtype name of every tensor of a checkpoint."""
    return {k: t.dtype for k, t in open_model(path)[2].items()}
