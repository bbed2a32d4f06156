#!/usr/bin/env python3
"""`make bench`: decode and prefill speed per weight type, memory, and MLA vs MHA.

Random-weight models (speed does not depend on what the weights hold):
  - llama2.c's stories15M and stories110M shapes (MHA), written in f32 and re-encoded by
    scripts/quantize.py to bf16, q8_0 and q4_0 (cached in build-bench/), timed through
    ./run: decode tok/s; prefill tok/s for 128- and 512-token prompts (build/bench_prefill,
    after a warm-up, as llama-bench); 1 and 2 threads,
    peak resident memory (VmHWM), and decode's fraction of the memory bandwidth measured
    in the same run by build/bench_bandwidth (a streaming read);
  - DeepSeek-V2-Lite's attention shape (16 heads, kv_lora_rank 512, rope 64, nope 128,
    v 128, dim 2048; 2 layers) as MLA, and an MHA model of the same heads and head size,
    timed by build/bench_decode at contexts 256 / 1024 / 4096 (the KV cache is filled
    with random values so the prefill is not paid for).
Usage: bench/bench.py [--threads 1,2] [--types f32,bf16,q8_0,q4_0] [--out DIR] [--quick]
"""
import argparse
import os
import re
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))  # the one path line: bench/ uses scripts/
import mixformat  # noqa: E402
import speed  # noqa: E402

RUN = os.path.join(ROOT, "run")
BUILD = os.path.join(ROOT, "build")


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


def typed_model(out, name, shape, dtype):
    """build-bench/NAME_DTYPE.bin: the f32 random model re-encoded by quantize.py."""
    f32 = os.path.join(out, name + "_f32.bin")
    random_model(f32, *shape)
    if dtype == "f32":
        return f32
    path = os.path.join(out, "%s_%s.bin" % (name, dtype))
    if not os.path.exists(path):
        subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "quantize.py"), f32, path,
                        "--type", dtype], check=True, stdout=subprocess.DEVNULL)
    return path


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


def run(cmd, threads):
    """stdout + stderr of one command with `threads` OpenMP threads (exit on failure)."""
    out, err = speed.sh(cmd, threads, "bench")
    return out + err


def run_rss(cmd, threads):
    """Peak resident memory (VmHWM, from the child's rusage) of one command, in bytes."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    with open(os.devnull, "w") as null:
        p = subprocess.Popen(cmd, stdout=null, stderr=null, env=env)
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.exit("bench: %s failed" % " ".join(cmd[:2]))
    return usage.ru_maxrss * 1024


def bandwidth(threads, reps):
    out = run([os.path.join(BUILD, "bench_bandwidth"), "512", str(3 * reps)], threads)
    f = dict(kv.split("=") for kv in out.split())
    return float(f["bandwidth_gb_s"]) * 1e9, float(f["median_gb_s"]) * 1e9


def prefill_decode(model, threads, n_prompt, n_gen):
    """(prefill tok/s, decode tok/s) of one ./run, from its stderr report."""
    prefill, decode = speed.prefill_decode(model, threads, n_prompt, n_gen, 1)
    return prefill[0], decode[0]


def prefill_steady(model, threads, n_prompt):
    """Prefill tok/s after a warm-up prefill in the same process (build/bench_prefill), as
    llama-bench measures its pp rows: a first ./run also pays for mapping the weights' pages."""
    out = run([os.path.join(BUILD, "bench_prefill"), model, str(n_prompt), "1"], threads)
    return float(re.search(r"prefill_tok_s_median=([\d.]+)", out).group(1))


def weight_types(a):
    print("## Weight types, llama2.c shapes (random weights; best and median of %d runs)\n" % a.reps)
    print("stories15M: dim 288, 6 layers, 6 heads, hidden 768, vocab 32000, tied; stories110M: dim "
          "768, 12 layers, 12 heads, hidden 2048. Decode: %d tokens after an 8-token prompt. "
          "Bandwidth: a streaming read of 512 MiB with the same threads, in this run; "
          "'of bandwidth' = decode tok/s x weight bytes read per token / best bandwidth. "
          "Prefill: build/bench_prefill, one prefill timed after a warm-up in the same process "
          "(as llama-bench's pp rows).\n"
          % a.n_gen)
    bw = {t: bandwidth(t, a.reps) for t in a.threads}
    for t in a.threads:
        print("- bandwidth, %d thread%s: best %.1f GB/s, median %.1f GB/s"
              % (t, "s" if t > 1 else "", bw[t][0] / 1e9, bw[t][1] / 1e9))
    print()
    print("| model | type | threads | file MB | weights MB/token | decode tok/s | of bandwidth "
          "| prefill pp128 tok/s | prefill pp512 tok/s | VmHWM MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, shape in [("stories15M", llama2c_shape(288, 768, 6, 6)),
                        ("stories110M", llama2c_shape(768, 2048, 12, 12))]:
        for dtype in a.types:
            path = typed_model(a.out, name, shape, dtype)
            info = run([RUN, path, "--info"], 1)
            per_token = int(re.search(r'"weight_bytes_per_token": (\d+)', info).group(1))
            size = os.path.getsize(path)
            for t in a.threads:
                dec, pp128, pp512 = [], [], []
                for _ in range(a.reps):  # interleaved, so a slow moment hits every metric
                    dec.append(prefill_decode(path, t, 8, a.n_gen)[1])
                    pp128.append(prefill_steady(path, t, 128))
                    pp512.append(prefill_steady(path, t, 512))
                rss = run_rss([RUN, path, "--tokens", "1 2 3", "-n", "16", "-t", "0", "--print-ids"], t)
                d, p1, p5 = speed.best_median(dec), speed.best_median(pp128), speed.best_median(pp512)
                print("| %s | %s | %d | %.1f | %.1f | %.1f (median %.1f) | %.0f %% | %.0f (%.0f) "
                      "| %.0f (%.0f) | %.0f |"
                      % (name, dtype, t, size / 1e6, per_token / 1e6, d[0], d[1],
                         100 * d[0] * per_token / bw[t][0], p1[0], p1[1], p5[0], p5[1], rss / 1e6))
                sys.stdout.flush()


def mla_vs_mha(a, threads):
    print("\n## MLA vs MHA, DeepSeek-V2-Lite attention shape (2 layers, dim 2048, 16 heads; %d threads)\n"
          % threads)
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
            speeds, kv = speed.decode_at(paths[kind], context, mode, 8 if a.quick else n, threads)
            tok_s = max(speeds)
            print("| %s | %d | %d | %.1f | %.1f |" % (label, context, kv, kv * context / 2**20, tok_s))
            sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--types", default="f32,bf16,q8_0,q4_0")
    ap.add_argument("--out", default=os.path.join(ROOT, "build-bench"))
    ap.add_argument("--quick", action="store_true", help="fewer tokens and repeats")
    a = ap.parse_args()
    a.threads = [int(t) for t in a.threads.split(",")]
    a.types = a.types.split(",")
    a.reps = 1 if a.quick else 3
    a.n_gen = 32 if a.quick else 128
    os.makedirs(a.out, exist_ok=True)
    weight_types(a)
    mla_vs_mha(a, max(a.threads))


if __name__ == "__main__":
    main()
