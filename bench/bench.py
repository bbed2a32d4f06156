#!/usr/bin/env python3
"""`make bench`: decode and prefill speed, and KV-cache bytes per token.

Random-weight models (speed does not depend on what the weights hold):
  - llama2.c's stories15M and stories110M shapes (MHA), timed through ./run;
  - DeepSeek-V2-Lite's attention shape (16 heads, kv_lora_rank 512, rope 64, nope 128,
    v 128, dim 2048; 2 layers) as MLA, and an MHA model of the same heads and head size,
    timed by build/bench_decode at contexts 256 / 1024 / 4096 (the KV cache is filled
    with random values so the prefill is not paid for).
Usage: bench/bench.py [--threads 2] [--out DIR] [--quick]
"""
import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))  # the one path line: bench/ uses scripts/
import mixformat  # noqa: E402
import speed  # noqa: E402


def random_model(path, cfg, layers):
    if os.path.exists(path):
        return
    rng = np.random.default_rng(0)
    shapes = mixformat.expected_tensors(cfg, layers)
    tensors = {}
    for name, shape in shapes.items():
        a = rng.standard_normal(shape, dtype=np.float32) * 0.02
        if name.endswith("norm"):
            a += 1.0
        tensors[name] = a
    mixformat.write_model(path, cfg, layers, tensors)


def llama2c_shape(dim, hidden, n_layers, n_heads):
    cfg = dict(dim=dim, n_layers=n_layers, vocab_size=32000, max_seq_len=1024, hidden_dim=hidden,
               norm_eps=1e-5, bos_id=1, eos_id=-1, rope_pairing="interleaved", tied=True)
    return cfg, [dict(kind="gqa", n_heads=n_heads, n_kv_heads=n_heads, head_dim=dim // n_heads)] * n_layers


def v2lite_shape(kind):
    cfg = dict(dim=2048, n_layers=2, vocab_size=4096, max_seq_len=4096, hidden_dim=2816,
               norm_eps=1e-6, bos_id=1, eos_id=-1, rope_pairing="interleaved")
    if kind == "mla":
        layer = dict(kind="mla", n_heads=16, q_lora_rank=0, kv_lora_rank=512,
                     qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128)
    else:
        layer = dict(kind="gqa", n_heads=16, n_kv_heads=16, head_dim=128)
    return cfg, [layer] * 2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(ROOT, "build-bench"))
    ap.add_argument("--quick", action="store_true", help="fewer tokens and repeats")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    reps = 1 if a.quick else 5

    print("## llama2.c shapes (fp32, %d threads; llama2.c's fp32 run on this class of machine: "
          "~750 tok/s for 15M, ~89 tok/s for 110M)\n" % a.threads)
    print("best and median of %d runs\n" % reps)
    print("| model | params | prefill tok/s (256-token prompt) | decode tok/s (256 tokens) | KV bytes/token |")
    print("|---|---|---|---|---|")
    for name, shape in [("stories15M", llama2c_shape(288, 768, 6, 6)),
                        ("stories110M", llama2c_shape(768, 2048, 12, 12))]:
        path = os.path.join(a.out, name + ".bin")
        random_model(path, *shape)
        prefill = speed.best_median(speed.prefill_decode(path, a.threads, 256, 1, reps)[0])
        decode = speed.best_median(speed.prefill_decode(path, a.threads, 8, 64 if a.quick else 256, reps)[1])
        info = json.loads(speed.sh([speed.RUN, path, "--info"], 1, "bench")[0])
        params, kv = info["n_params"], info["kv_bytes_per_token"]
        print("| %s | %.1fM | %.0f (median %.0f) | %.1f (median %.1f) | %d |"
              % (name, params / 1e6, prefill[0], prefill[1], decode[0], decode[1], kv))
        sys.stdout.flush()

    print("\n## MLA vs MHA, DeepSeek-V2-Lite attention shape (2 layers, dim 2048, 16 heads; %d threads)\n"
          % a.threads)
    print("best of 3 runs\n")
    print("| model | context | KV bytes/token | KV MiB at context | decode tok/s |")
    print("|---|---|---|---|---|")
    paths = {}
    for kind in ("mla", "mha"):
        paths[kind] = os.path.join(a.out, "v2lite_%s.bin" % kind)
        random_model(paths[kind], *v2lite_shape(kind))
    for context in (256, 1024, 4096):
        for label, kind, mode, n in [("MLA absorbed", "mla", "absorbed", 32),
                                     ("MLA naive", "mla", "naive", 8 if context < 4096 else 3),
                                     ("MHA", "mha", "absorbed", 32)]:
            speeds, kv = speed.decode_at(paths[kind], context, mode, 8 if a.quick else n, a.threads)
            tok_s = max(speeds)
            print("| %s | %d | %d | %.1f | %.1f |" % (label, context, kv, kv * context / 2**20, tok_s))
            sys.stdout.flush()


if __name__ == "__main__":
    main()
