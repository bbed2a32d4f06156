#!/usr/bin/env python3
"""Random-weight checkpoints of real models' shapes, written straight to their storage
type by a streaming generator (no f32 copy of the model ever exists, in memory or on
disk), for `make bench-big`:

    bench/make_big.py mistral7b q4_0 OUT.bin     Mistral-7B: dim 4096, 32 layers, 32 heads,
                                                 8 KV heads, hidden 14336, vocab 32000
    bench/make_big.py tinyllama bf16 OUT.bin     TinyLlama-1.1B: dim 2048, 22 layers, 32 heads,
                                                 4 KV heads, hidden 5632, vocab 32000
    bench/make_big.py dsv2lite q4_0 OUT.bin      DeepSeek-V2-Lite (15.7B, MoE + MLA): dim 2048,
                                                 27 layers, 16 heads, MLA kv_lora_rank 512,
                                                 rope 64 / nope 128 / v 128, no q LoRA; layer 0
                                                 dense 10944; layers 1..26: 64 routed experts
                                                 of width 1408 (top-6 softmax greedy) + 2
                                                 shared (width 2816); vocab 102400

Block types (q8_0, q4_0) get random codes under one f16 scale per tensor (so no quantizer
runs); float types get normal values. Norms are ones (f32). Speed does not
depend on what the weights hold; these models only measure load time, memory and tok/s.
Routers are f32 normal values (the format requires f32 routers), so different tokens and
layers pick different experts, as a trained router does. With q4_0 the output head is
q8_0, as every writer does (mixformat.default_overrides).
"""
import os
import signal
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
    "dsv2lite": dict(dim=2048, n_layers=27, n_heads=16, vocab=102400, theta=1e4, hidden=10944,
                     kv_lora_rank=512, qk_rope_head_dim=64, qk_nope_head_dim=128, v_head_dim=128,
                     n_experts=64, top_k=6, expert_hidden=1408, shared_hidden=2 * 1408,
                     first_dense=1),
}


def symmetric_codes(codes, dtype):
    """Make uniform random codes zero-mean, in place. Raw uniform codes have mean -0.5
    (q4_0: nibble - 8 in [-8, 7]; q8_0: int8 in [-128, 127]), so every matrix would add
    -0.5 d * sum(x) along the all-ones direction; through 27 layers that direction
    swamps the residual stream, every token's hidden state looks alike, and a MoE router
    picks the same experts for every token. The code -8 (q4_0) / -128 (q8_0) becomes 0."""
    if dtype == "q4_0":
        lo, hi = codes & 0x0F, codes >> 4
        lo[lo == 0] = 8
        hi[hi == 0] = 8
        codes[...] = lo | (hi << 4)
    else:
        codes[codes == 0x80] = 0


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
            bb = mixformat.BLOCK_BYTES[dtype]
            # random codes; one f16 scale per tensor, chosen so the weights' std is ~std
            # (uniform codes: q8_0 ~ 73 d, q4_0 ~ 4.6 d). Speed does not depend on either.
            out = np.frombuffer(rng.bytes(blocks * bb), np.uint8).reshape(blocks, bb).copy()
            symmetric_codes(out[:, 2:], dtype)
            d = np.float16(self.std / (73.0 if dtype == "q8_0" else 4.6))
            out[:, :2] = np.frombuffer(d.tobytes(), np.uint8)
            return out.tobytes()
        return mixformat.encode(rng.standard_normal(n, dtype=np.float32) * self.std, dtype)


def build(shape_name, dtype, out):
    s = SHAPES[shape_name]
    D, H, Hkv = s["dim"], s["n_heads"], s.get("n_kv_heads")
    cfg = dict(dim=D, n_layers=s["n_layers"], vocab_size=s["vocab"], max_seq_len=4096,
               hidden_dim=s["hidden"], norm_eps=1e-5, bos_id=1, eos_id=2, rope_theta=s["theta"])
    if "kv_lora_rank" in s:  # DeepSeek-V2: MLA everywhere, dense first layer(s), then MoE
        cfg.update(norm_eps=1e-6, bos_id=100000, eos_id=100001,
                   rope_scaling=dict(type="yarn", factor=40.0,
                                     original_max_position_embeddings=4096, beta_fast=32.0,
                                     beta_slow=1.0, mscale=0.707, mscale_all_dim=0.707))
        mla = dict(kind="mla", n_heads=H, q_lora_rank=0, kv_lora_rank=s["kv_lora_rank"],
                   qk_nope_head_dim=s["qk_nope_head_dim"], qk_rope_head_dim=s["qk_rope_head_dim"],
                   v_head_dim=s["v_head_dim"])
        moe = dict(mla, ffn="moe", n_experts=s["n_experts"], top_k=s["top_k"],
                   expert_hidden=s["expert_hidden"], shared_hidden=s["shared_hidden"],
                   scoring="softmax", topk_method="greedy", routed_scaling_factor=1.0)
        layers = [mla] * s["first_dense"] + [moe] * (s["n_layers"] - s["first_dense"])
    else:
        layers = [dict(kind="gqa", n_heads=H, n_kv_heads=Hkv, head_dim=D // H)] * s["n_layers"]
    tensors = {}
    for i, (name, shp) in enumerate(mixformat.expected_tensors(cfg, layers).items()):
        tensors[name] = RandomTensor(shp, i, 1.0 / np.sqrt(shp[-1]) if len(shp) > 1 else 1.0)
    mixformat.write_model(out, cfg, layers, tensors, dtype=dtype,
                          overrides=mixformat.default_overrides(dtype, cfg))


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt  # write_model removes its temp file


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_sigterm)
    if len(sys.argv) != 4 or sys.argv[1] not in SHAPES or sys.argv[2] not in mixformat.DTYPES:
        sys.exit("usage: make_big.py mistral7b|tinyllama|dsv2lite f32|f16|bf16|q8_0|q4_0 OUT.bin")
    build(*sys.argv[1:])
