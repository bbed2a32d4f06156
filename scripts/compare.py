#!/usr/bin/env python3
"""`make compare`: every model in weights/ on the same held-out text and prompt.

Prints a markdown table (attention layout, parameters, KV bytes per token, KV memory at
2048 and 8192 tokens, perplexity and bits per byte, prefill and decode tok/s, a greedy
continuation) and writes a PNG plot of KV memory and decode speed against context length.

    python3 scripts/compare.py [--weights weights] [--text weights/eval_stories.txt]
                               [--threads 2] [--md docs/compare.md] [--png docs/compare.png]
"""
import argparse
import glob
import json
import os
import sys

import speed
from speed import ROOT, RUN

PROMPT = "Once upon a time"
CONTEXTS = [128, 256, 512, 1024, 2048, 4096, 8192]


def sh(cmd, threads):
    return speed.sh(cmd, threads, "compare")


def layout(info):
    """'MHA x6' or 'MHA, GQA(2), MQA, MLA(64+16), ...' from --info's layers"""
    def one(l):
        if l["kind"] == "mla":
            return "MLA(%d+%d)" % (l["kv_lora_rank"], l["qk_rope_head_dim"])
        if l["kind"] == "gqa":
            return "GQA(%d)" % l["n_kv_heads"]
        return l["kind"].upper()
    kinds = [one(l) for l in info["layers"]]
    return "%s x%d" % (kinds[0], len(kinds)) if len(set(kinds)) == 1 else ", ".join(kinds)


def best_speed(model, threads):
    """best of three: prefill of a 256-token prompt, decode of 256 tokens"""
    prefill, _ = speed.prefill_decode(model, threads, 256, 0, 3)
    _, decode = speed.prefill_decode(model, threads, 1, 256, 3, prompt_ids="1")
    return max(prefill), max(decode)


def decode_at(model, context, threads):
    """best of three: decode tok/s with the KV cache filled to `context` tokens"""
    return max(speed.decode_at(model, context, "absorbed", 64, threads, 3)[0])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default=os.path.join(ROOT, "weights"))
    ap.add_argument("--text", default=os.path.join(ROOT, "weights", "eval_stories.txt"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--md", default=os.path.join(ROOT, "docs", "compare.md"))
    ap.add_argument("--png", default=os.path.join(ROOT, "docs", "compare.png"))
    a = ap.parse_args()
    models = sorted(glob.glob(os.path.join(a.weights, "*.bin")))
    if not models:
        sys.exit("compare: no .bin models in %s" % a.weights)

    rows, curves = [], {}
    for path in models:
        name = os.path.basename(path)[:-4]
        info = json.loads(sh([RUN, path, "--info"], 1)[0])
        out, _ = sh([RUN, path, "--ppl", a.text], a.threads)
        ppl = dict(kv.split("=") for kv in out.split()[1:])
        prefill, decode = best_speed(path, a.threads)
        text, _ = sh([RUN, path, "-p", PROMPT, "-n", "40", "-t", "0"], a.threads)
        kv = info["kv_bytes_per_token"]
        rows.append((name, layout(info), info["n_params"], kv, kv * 2048 / 2**20, kv * 8192 / 2**20,
                     float(ppl["ppl"]), float(ppl["bpb"]), prefill, decode, " ".join(text.split())))
        curves[name] = (kv, [decode_at(path, c, a.threads) for c in CONTEXTS])
        print("measured %s" % name, file=sys.stderr)

    lines = ["| model | attention (per layer) | params | KV bytes/token | KV MiB @2048 | KV MiB @8192 "
             "| ppl | bits/byte | prefill tok/s | decode tok/s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| %s | %s | %.2fM | %d | %.1f | %.1f | %.3f | %.4f | %.0f | %.0f |"
                     % (r[0], r[1], r[2] / 1e6, r[3], r[4], r[5], r[6], r[7], r[8], r[9]))
    lines += ["", "Greedy continuation of \"%s\" (40 tokens):" % PROMPT, ""]
    for r in rows:
        lines.append("- **%s**: %s" % (r[0], r[10]))
    lines += ["", "Decode tok/s against context length (cache filled to that length, %d threads):" % a.threads, "",
              "| model | " + " | ".join(str(c) for c in CONTEXTS) + " |",
              "|---|" + "---|" * len(CONTEXTS)]
    for name, (_, tps) in curves.items():
        lines.append("| %s | " % name + " | ".join("%.0f" % t for t in tps) + " |")
    md = "\n".join(lines) + "\n"
    print(md)
    os.makedirs(os.path.dirname(a.md), exist_ok=True)
    with open(a.md, "w") as f:
        f.write(md)

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("compare: matplotlib not installed (apt-get install python3-matplotlib); no plot",
              file=sys.stderr)
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, (kv, tps) in curves.items():
        ax1.plot(CONTEXTS, [kv * c / 2**20 for c in CONTEXTS], marker="o", label=name)
        ax2.plot(CONTEXTS, tps, marker="o", label=name)
    ax1.set(xscale="log", yscale="log", xlabel="context (tokens)", ylabel="KV cache (MiB, fp32)",
            title="KV-cache memory")
    ax2.set(xscale="log", yscale="log", xlabel="context (tokens)", ylabel="decode tokens/s",
            title="Decode speed (%d threads)" % a.threads)
    for ax in (ax1, ax2):
        ax.set_xticks(CONTEXTS)
        ax.set_xticklabels([str(c) for c in CONTEXTS], rotation=45)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(a.png, dpi=110)
    print("wrote %s and %s" % (a.md, a.png), file=sys.stderr)


if __name__ == "__main__":
    main()
