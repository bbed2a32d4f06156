#!/usr/bin/env python3
"""Random-weight checkpoints of real models' shapes, written straight to their storage
type by a streaming generator (no f32 copy of the model ever exists, in memory or on
disk), for `make bench-big`:

    bench/make_big.py mistral7b q4_0 OUT.bin     Mistral-7B: dim 4096, 32 layers, 32 heads,
                                                 8 KV heads, hidden 14336, vocab 32000
    bench/make_big.py tinyllama bf16 OUT.bin     TinyLlama-1.1B: dim 2048, 22 layers, 32 heads,
                                                 4 KV heads, hidden 5632, vocab 32000

Block types (q8_0, q4_0) get random codes and random f16 scales drawn per block (so no
quantizer runs); float types get normal values. Norms are ones (f32). Speed does not
depend on what the weights hold; these models only measure load time, memory and tok/s.
"""
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "scripts"))
import mixformat  # noqa: E402

SHAPES = {
    "mistral7b": dict(dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, hidden=14336, vocab=32000,
                      theta=1e6),
    "tinyllama": dict(dim=2048, n_layers=22, n_heads=32, n_kv_heads=4, hidden=5632, vocab=32000,
                      theta=1e4),
}


class RandomTensor:
    """Rows of random weights produced on demand, already in the stored type."""

    def __init__(self, shape, seed, std):
        self.shape, self.seed, self.std = tuple(shape), seed, std

    def encoded(self, lo, hi, dtype):
        rng = np.random.default_rng([self.seed, lo])
        n = (hi - lo) * int(np.prod(self.shape[1:], dtype=np.int64))
        if len(self.shape) == 1:
            return np.ones(n, "<f4").tobytes()
        if dtype in mixformat.BLOCK_BYTES:
            blocks = n // mixformat.QK
            out = np.empty((blocks, mixformat.BLOCK_BYTES[dtype]), np.uint8)
            # std of uniform codes: q8_0 ~ 73 d, q4_0 ~ 4.6 d
            d = self.std / (73.0 if dtype == "q8_0" else 4.6)
            out[:, :2] = (rng.uniform(0.5, 1.5, blocks) * d).astype("<f2").view(np.uint8).reshape(-1, 2)
            out[:, 2:] = rng.integers(0, 256, (blocks, out.shape[1] - 2), dtype=np.uint8)
            return out.tobytes()
        return mixformat.encode(rng.standard_normal(n, dtype=np.float32) * self.std, dtype)


def build(shape_name, dtype, out):
    s = SHAPES[shape_name]
    D, H, Hkv = s["dim"], s["n_heads"], s["n_kv_heads"]
    cfg = dict(dim=D, n_layers=s["n_layers"], vocab_size=s["vocab"], max_seq_len=4096,
               hidden_dim=s["hidden"], norm_eps=1e-5, bos_id=1, eos_id=2, rope_theta=s["theta"])
    layers = [dict(kind="gqa", n_heads=H, n_kv_heads=Hkv, head_dim=D // H)] * s["n_layers"]
    tensors = {}
    for i, (name, shp) in enumerate(mixformat.expected_tensors(cfg, layers).items()):
        tensors[name] = RandomTensor(shp, i, 1.0 / np.sqrt(shp[-1]) if len(shp) > 1 else 1.0)
    mixformat.write_model(out, cfg, layers, tensors, dtype=dtype)


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in SHAPES or sys.argv[2] not in mixformat.DTYPES:
        sys.exit("usage: make_big.py mistral7b|tinyllama f32|f16|bf16|q8_0|q4_0 OUT.bin")
    build(*sys.argv[1:])
