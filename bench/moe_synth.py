#!/usr/bin/env python3
"""A synthetic Hugging Face DeepSeek-V2-Lite checkpoint, sharded, random bf16 weights.

    python3 bench/moe_synth.py OUT_DIR [--layers 3] [--shard-mb 1000]

Real V2-Lite shapes (dim 2048, 16 heads, MLA dc 512 / dr 64 / dn 128 / dv 128,
64 experts of width 1408, top-6, 2 shared, first layer dense 10944, vocab 102400)
and hub tensor names (one tensor per expert, model.safetensors.index.json), for
as many layers as asked (27 is the real model, ~31 GB). Written tensor by tensor
(numpy and the standard library only), so the writer itself needs little memory:
it exists to measure scripts/convert_hf.py's peak memory on a multi-GB sharded
MoE checkpoint, and to feed the MoE decode benchmark.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import mixformat  # noqa: E402

D, H, DC, DR, DN, DV, E, IE, NS, K, I_DENSE, V = 2048, 16, 512, 64, 128, 128, 64, 1408, 2, 6, \
    10944, 102400


def config(L):
    return dict(architectures=["DeepseekV2ForCausalLM"], model_type="deepseek_v2",
                hidden_size=D, num_hidden_layers=L, num_attention_heads=H,
                num_key_value_heads=H, q_lora_rank=None, kv_lora_rank=DC, qk_rope_head_dim=DR,
                qk_nope_head_dim=DN, v_head_dim=DV, intermediate_size=I_DENSE,
                moe_intermediate_size=IE, n_routed_experts=E, n_shared_experts=NS,
                num_experts_per_tok=K, first_k_dense_replace=1, moe_layer_freq=1,
                topk_method="greedy", n_group=1, topk_group=1, norm_topk_prob=False,
                routed_scaling_factor=1.0, scoring_func="softmax", vocab_size=V,
                max_position_embeddings=163840, rms_norm_eps=1e-6, tie_word_embeddings=False,
                bos_token_id=100000, eos_token_id=100001, rope_theta=10000,
                rope_scaling=dict(type="yarn", factor=40, original_max_position_embeddings=4096,
                                  beta_fast=32, beta_slow=1, mscale=0.707, mscale_all_dim=0.707),
                hidden_act="silu", attention_bias=False, torch_dtype="bfloat16")


def tensors(L):
    """(name, shape) in the order the hub shards hold them."""
    out = [("model.embed_tokens.weight", (V, D))]
    for n in range(L):
        p = "model.layers.%d." % n
        a = p + "self_attn."
        out += [(a + "q_proj.weight", (H * (DN + DR), D)),
                (a + "kv_a_proj_with_mqa.weight", (DC + DR, D)),
                (a + "kv_a_layernorm.weight", (DC,)),
                (a + "kv_b_proj.weight", (H * (DN + DV), DC)),
                (a + "o_proj.weight", (D, H * DV)),
                (p + "input_layernorm.weight", (D,)),
                (p + "post_attention_layernorm.weight", (D,))]
        if n == 0:
            out += [(p + "mlp.gate_proj.weight", (I_DENSE, D)), (p + "mlp.up_proj.weight", (I_DENSE, D)),
                    (p + "mlp.down_proj.weight", (D, I_DENSE))]
        else:
            out.append((p + "mlp.gate.weight", (E, D)))
            for e in range(E):
                q = p + "mlp.experts.%d." % e
                out += [(q + "gate_proj.weight", (IE, D)), (q + "up_proj.weight", (IE, D)),
                        (q + "down_proj.weight", (D, IE))]
            s = p + "mlp.shared_experts."
            out += [(s + "gate_proj.weight", (NS * IE, D)), (s + "up_proj.weight", (NS * IE, D)),
                    (s + "down_proj.weight", (D, NS * IE))]
    out += [("model.norm.weight", (D,)), ("lm_head.weight", (V, D))]
    return out


def write_shard(path, items, rng):
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in items:
        nb = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + nb]}
        off += nb
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for name, shape in items:
            if len(shape) == 1:
                a = 1.0 + 0.02 * rng.standard_normal(shape, dtype=np.float32)
            else:  # std 1/sqrt(fan_in): activations keep their scale through the layers
                a = rng.standard_normal(shape, dtype=np.float32) * np.float32(shape[-1] ** -0.5)
            f.write(mixformat.to_bf16_bits(a).astype("<u2").tobytes())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--shard-mb", type=int, default=1000)
    a = ap.parse_args()
    os.makedirs(a.out_dir, exist_ok=True)
    rng = np.random.default_rng(0)
    items, shards, cur, size = tensors(a.layers), [], [], 0
    for name, shape in items:
        nb = int(np.prod(shape)) * 2
        if cur and size + nb > a.shard_mb * 1e6:
            shards.append(cur)
            cur, size = [], 0
        cur.append((name, shape))
        size += nb
    shards.append(cur)
    wm, total = {}, 0
    for i, sh in enumerate(shards):
        fn = "model-%05d-of-%05d.safetensors" % (i + 1, len(shards))
        write_shard(os.path.join(a.out_dir, fn), sh, rng)
        for name, shape in sh:
            wm[name] = fn
            total += int(np.prod(shape)) * 2
    with open(os.path.join(a.out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": wm}, f)
    with open(os.path.join(a.out_dir, "config.json"), "w") as f:
        json.dump(config(a.layers), f, indent=1)
    print("wrote %s: %d layers, %d shards, %.2f GB" % (a.out_dir, a.layers, len(shards), total / 1e9))


if __name__ == "__main__":
    main()
