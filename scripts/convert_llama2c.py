#!/usr/bin/env python3
"""Import a llama2.c checkpoint and its tokenizer.bin into this project's .bin format.

    python3 scripts/convert_llama2c.py MODEL.bin TOKENIZER.bin OUT.bin [--dtype f32|f16|bf16|q8_0|q4_0]

numpy and the standard library only. Written from the layout llama2.c's run.c
reads and its export.py writes (no code of llama2.c is used):

  version 0 ("legacy"): 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
    vocab_size, seq_len; vocab_size < 0 means an untied classifier), then float32
    tensors in this order, each layer's copy of one tensor after the other:
    tok_embeddings [V, D]; attention_norm [L, D]; wq [L, H*hd, D]; wk, wv [L, Hkv*hd, D];
    wo [L, D, H*hd]; ffn_norm [L, D]; w1 [L, I, D]; w2 [L, D, I]; w3 [L, I, D]; norm [D];
    two unused RoPE tables [seq_len, hd/2] each; output [V, D] when untied.
  version 1: uint32 magic 0x616b3432 ("ak42"), int32 version 1, the 7 int32 above
    (vocab_size positive), uint8 shared_classifier, zero padding to 256 bytes; then
    float32: attention norms, ffn norms, final norm, tok_embeddings, wq, wk, wv, wo,
    w1, w2, w3, [output].
  version 2: like version 1 with an int32 group size after the flag; the norms in
    float32, then each matrix of version 1's list as int8 values followed by one
    float32 scale per group of `group size` values (value = int8 * scale).
    The runtime has no int8 type of that layout (its q8_0 is ggml's: 32 values with
    an f16 scale), so the matrices are dequantized here (exactly: int8 * scale in
    float32) and stored in --dtype; --dtype q8_0 re-quantizes them into ggml blocks.

llama2.c's model: RMSNorm eps 1e-5, RoPE base 10000 rotating adjacent pairs
(2j, 2j+1) over the whole head, SwiGLU w2(silu(w1 x) * w3 x), BOS 1, EOS 2.

tokenizer.bin: int32 max_token_length, then per token: float32 score, int32 byte
length, the bytes (the SentencePiece piece with U+2581 written as a space; BOS and
EOS written as "\\n<s>\\n" and "\\n</s>\\n"). Its encoder is SentencePiece BPE:
prepend one space to non-empty text, start from the text's code points (a code
point not in the vocabulary becomes its UTF-8 bytes, id = byte + 3), and merge the
adjacent pair whose concatenation is a piece of highest score (leftmost on ties)
until none is left. That is exactly the algorithm of the SentencePiece library's
BPE model, so the vocabulary is written back as a SentencePiece model (pieces,
scores, types; BPE, byte fallback, no normalization but the dummy-prefix space)
and embedded as the checkpoint's tokenizer; docs/CONVERT.md lists the checks.
"""
import argparse
import re
import struct
import sys

import numpy as np

import mixformat

MAGIC = 0x616B3432  # "ak42" read as a little-endian uint32
SPACE = "\u2581"


class ConvertError(ValueError):
    pass


# --- checkpoint --------------------------------------------------------------------

def _read_header(buf):
    """-> (version, cfg dict, shared, group_size, offset of the first weight)."""
    if len(buf) < 28:
        raise ConvertError("checkpoint is %d bytes, shorter than llama2.c's 28-byte header"
                           % len(buf))
    magic, = struct.unpack_from("<I", buf, 0)
    if magic == MAGIC:
        if len(buf) < 256:
            raise ConvertError("checkpoint has the llama2.c v1/v2 magic but is shorter than "
                               "its 256-byte header")
        version, = struct.unpack_from("<i", buf, 4)
        if version not in (1, 2):
            raise ConvertError("llama2.c checkpoint version %d is not supported (0, 1, 2 are)"
                               % version)
        p = struct.unpack_from("<7i", buf, 8)
        shared = buf[36]
        if shared not in (0, 1):
            raise ConvertError("bad shared_classifier flag %d in the header" % shared)
        group = struct.unpack_from("<i", buf, 37)[0] if version == 2 else 0
        if version == 2 and group <= 0:
            raise ConvertError("bad quantization group size %d in the header" % group)
        start = 256
    else:
        version, p, group, start = 0, struct.unpack_from("<7i", buf, 0), 0, 28
        shared = 1 if p[5] > 0 else 0
    dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len = p
    vocab = abs(vocab)
    for name, v in (("dim", dim), ("hidden_dim", hidden), ("n_layers", n_layers),
                    ("n_heads", n_heads), ("n_kv_heads", n_kv_heads), ("vocab_size", vocab),
                    ("seq_len", seq_len)):
        if not 0 < v < (1 << 24):
            raise ConvertError("header field %s = %d is not a plausible size" % (name, v))
    if dim % n_heads or n_heads % n_kv_heads or (dim // n_heads) % 2:
        raise ConvertError("dim %d, n_heads %d, n_kv_heads %d do not divide into even heads"
                           % (dim, n_heads, n_kv_heads))
    cfg = dict(dim=dim, hidden_dim=hidden, n_layers=n_layers, n_heads=n_heads,
               n_kv_heads=n_kv_heads, vocab_size=vocab, seq_len=seq_len)
    return version, cfg, bool(shared), group, start


def _plan(version, c, shared):
    """[(name, shape)] in the file's order; names are this project's (per layer: 'wq.N')."""
    D, I, L, V = c["dim"], c["hidden_dim"], c["n_layers"], c["vocab_size"]
    hd = D // c["n_heads"]
    q, kv = c["n_heads"] * hd, c["n_kv_heads"] * hd
    per = {"attn_norm": (D,), "wq": (q, D), "wk": (kv, D), "wv": (kv, D), "wo": (D, q),
           "ffn_norm": (D,), "w1": (I, D), "w2": (D, I), "w3": (I, D)}

    def stack(names):
        return [("layers.%d.%s" % (n, k), per[k]) for k in names for n in range(L)]
    if version == 0:
        plan = [("tok_embeddings", (V, D))] + stack(["attn_norm", "wq", "wk", "wv", "wo",
                                                     "ffn_norm", "w1", "w2", "w3"])
        plan += [("norm", (D,)), (None, (c["seq_len"], hd // 2)), (None, (c["seq_len"], hd // 2))]
    else:
        plan = stack(["attn_norm"]) + stack(["ffn_norm"]) + [("norm", (D,))]
        plan += [("tok_embeddings", (V, D))] + stack(["wq", "wk", "wv", "wo", "w1", "w2", "w3"])
    if not shared:
        plan.append(("output", (V, D)))
    return plan


def read_checkpoint(path):
    """-> (llama2.c config, {our tensor name: float32 array}, tied, version)."""
    with open(path, "rb") as f:
        buf = f.read()
    version, c, shared, group, off = _read_header(buf)
    tensors = {}
    for name, shape in _plan(version, c, shared):
        n = int(np.prod(shape))
        quantized = version == 2 and len(shape) == 2 and name is not None
        if quantized:
            if n % group:
                raise ConvertError("tensor %s has %d values, not a multiple of the group size %d"
                                   % (name, n, group))
            need = n + 4 * (n // group)
        else:
            need = 4 * n
        if off + need > len(buf):
            raise ConvertError("checkpoint is truncated: %s needs bytes %d..%d, the file has %d"
                               % (name or "the RoPE tables", off, off + need, len(buf)))
        if quantized:
            q = np.frombuffer(buf, dtype=np.int8, count=n, offset=off).astype(np.float32)
            s = np.frombuffer(buf, dtype="<f4", count=n // group, offset=off + n)
            a = (q.reshape(-1, group) * s[:, None]).astype(np.float32)
        else:
            a = np.frombuffer(buf, dtype="<f4", count=n, offset=off)
        off += need
        if name is not None:
            tensors[name] = a.reshape(shape)
    if off != len(buf):
        raise ConvertError("checkpoint has %d bytes after the last tensor (wrong header or "
                           "not a llama2.c export)" % (len(buf) - off))
    for name, a in tensors.items():
        if not np.all(np.isfinite(a)):
            raise ConvertError("tensor %s holds NaN or infinite values" % name)
    return c, tensors, shared, version


# --- tokenizer ---------------------------------------------------------------------

def read_tokenizer(path, vocab_size):
    """-> (max_token_length, [(piece bytes, score)]) for exactly vocab_size tokens."""
    with open(path, "rb") as f:
        buf = f.read()
    if len(buf) < 4:
        raise ConvertError("tokenizer %s is shorter than its 4-byte header" % path)
    max_len, = struct.unpack_from("<i", buf, 0)
    off, tokens = 4, []
    for i in range(vocab_size):
        if off + 8 > len(buf):
            raise ConvertError("tokenizer %s ends after %d tokens; the model has %d"
                               % (path, i, vocab_size))
        score, n = struct.unpack_from("<fi", buf, off)
        off += 8
        if n < 0 or off + n > len(buf):
            raise ConvertError("tokenizer %s: token %d has a bad length %d" % (path, i, n))
        tokens.append((buf[off:off + n], score))
        off += n
    if off != len(buf):
        raise ConvertError("tokenizer %s has more than the model's %d tokens (%d bytes left)"
                           % (path, vocab_size, len(buf) - off))
    return max_len, tokens


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(num, wire, payload):
    return _varint(num << 3 | wire) + payload


def _bytes_field(num, b):
    return _field(num, 2, _varint(len(b)) + b)


def _int_field(num, v):
    return _field(num, 0, _varint(v & 0xFFFFFFFFFFFFFFFF))


NORMAL, UNKNOWN, CONTROL, BYTE = 1, 2, 3, 6
BYTE_PIECE = re.compile(rb"<0x([0-9A-F]{2})>\Z")


def sentencepiece_model(tokens):
    """llama2.c's vocabulary -> serialized SentencePiece ModelProto (BPE, byte fallback).

    Types are inferred from llama2.c's fixed layout, which its encoder assumes and
    which is therefore required: id 0 <unk>, 1 BOS, 2 EOS, 3..258 the bytes <0x00>..<0xFF>."""
    V = len(tokens)
    if V < 259:
        raise ConvertError("tokenizer has %d tokens; llama2.c's layout needs at least 259 "
                           "(<unk>, <s>, </s>, 256 bytes)" % V)
    pieces, seen = [], {}
    for i, (raw, score) in enumerate(tokens):
        if not np.isfinite(score):
            raise ConvertError("token %d has a non-finite score" % i)
        if i == 0:
            if raw != b"<unk>":
                raise ConvertError("token 0 is %r, llama2.c expects <unk>" % raw)
            piece, kind = "<unk>", UNKNOWN
        elif i in (1, 2):
            want = b"\n<s>\n" if i == 1 else b"\n</s>\n"
            if raw not in (want, want.strip()):
                raise ConvertError("token %d is %r, llama2.c expects %r" % (i, raw, want))
            piece, kind = raw.strip().decode(), CONTROL
        elif i < 259:
            m = BYTE_PIECE.match(raw)
            if not m or int(m.group(1), 16) != i - 3:
                raise ConvertError("token %d is %r, llama2.c expects the byte piece <0x%02X>"
                                   % (i, raw, i - 3))
            piece, kind = raw.decode(), BYTE
        else:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ConvertError("token %d is not valid UTF-8: %r" % (i, raw)) from None
            if not text:
                raise ConvertError("token %d is empty" % i)
            if SPACE in text:
                raise ConvertError("token %d holds U+2581 itself, which SentencePiece uses "
                                   "for the space" % i)
            piece, kind = text.replace(" ", SPACE), NORMAL
        if piece in seen:
            raise ConvertError("tokens %d and %d are the same piece %r" % (seen[piece], i, piece))
        seen[piece] = i
        body = _bytes_field(1, piece.encode()) + _field(2, 5, struct.pack("<f", score))
        if kind != NORMAL:
            body += _int_field(3, kind)
        pieces.append(_bytes_field(1, body))
    trainer = (_int_field(3, 2)          # model_type BPE
               + _int_field(4, V)        # vocab_size
               + _int_field(35, 1)       # byte_fallback
               + _int_field(40, 0) + _int_field(41, 1) + _int_field(42, 2)
               + _int_field(43, -1))     # unk, bos, eos, pad ids
    normalizer = (_bytes_field(1, b"identity") + _int_field(3, 1)  # add_dummy_prefix
                  + _int_field(4, 0) + _int_field(5, 1))  # keep whitespace runs; escape spaces
    return b"".join(pieces) + _bytes_field(2, trainer) + _bytes_field(3, normalizer)


# --- main --------------------------------------------------------------------------

def convert(model_path, tokenizer_path, out_path, dtype="f32"):
    c, tensors, shared, version = read_checkpoint(model_path)
    _, tokens = read_tokenizer(tokenizer_path, c["vocab_size"])
    spm = sentencepiece_model(tokens)
    hd = c["dim"] // c["n_heads"]
    cfg = dict(dim=c["dim"], n_layers=c["n_layers"], vocab_size=c["vocab_size"],
               max_seq_len=c["seq_len"], hidden_dim=c["hidden_dim"], norm_eps=1e-5,
               tied=shared, bos_id=1, eos_id=2, rope_theta=10000.0,
               rope_pairing="interleaved")
    layers = [dict(kind="gqa", n_heads=c["n_heads"], n_kv_heads=c["n_kv_heads"], head_dim=hd)
              for _ in range(c["n_layers"])]
    norms = {k: "f32" for k in tensors if k.endswith("norm")}
    mixformat.write_model(out_path, cfg, layers, tensors, tokenizer_bytes=spm, dtype=dtype,
                          dtypes=norms)
    return c, version


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", help="llama2.c checkpoint (export version 0, 1 or 2)")
    ap.add_argument("tokenizer", help="llama2.c tokenizer.bin")
    ap.add_argument("out", help="output .bin (docs/FORMAT.md)")
    ap.add_argument("--dtype", default="f32", choices=["f32", "f16", "bf16", "q8_0", "q4_0"],
                    help="storage of the matrices (norms stay f32); q8_0/q4_0 are ggml's "
                         "32-value blocks, re-quantized from the float weights")
    a = ap.parse_args(argv)
    try:
        c, version = convert(a.model, a.tokenizer, a.out, a.dtype)
    except (ConvertError, mixformat.FormatError, OSError) as e:
        print("convert_llama2c: error: %s" % e, file=sys.stderr)
        return 1
    print("converted llama2.c v%d checkpoint: dim %d, %d layers, %d heads (%d KV), vocab %d, "
          "seq_len %d -> %s" % (version, c["dim"], c["n_layers"], c["n_heads"], c["n_kv_heads"],
                                c["vocab_size"], c["seq_len"], a.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
