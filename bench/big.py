#!/usr/bin/env python3
"""`make bench-big`: real models' shapes with random weights, written straight to their
type by bench/make_big.py: Mistral-7B (q4_0, q8_0), TinyLlama-1.1B (bf16) and
DeepSeek-V2-Lite (q4_0, q8_0; MoE + MLA). Results: docs/BENCH-BIG.md.

    bench/big.py [--models mistral7b_q4_0,dsv2lite_q4_0,...] [--dir build-bench]
                 [--threads 1,2] [--cold] [--tokens 32] [--json FILE]

Per model: file size; load time (`./run --info`: map and validate) and time to the
first token (`./run -n 1`: load, one prefill token, one decode token), cold (--cold,
needs root: the page cache is dropped first) and warm (after reading the file once);
then per thread count: the streaming-read bandwidth (build/bench_bandwidth, same run),
`./run` prefill (16-token prompt) and decode (16 tokens) tok/s with its peak resident
memory (VmHWM), and build/bench_decode's decode tok/s at 256 and 4096 tokens of context
(cache filled with random values; MLA models: absorbed, and naive at 256), with decode's
fraction of the bandwidth bound: tok/s * active weight bytes per token / bandwidth
(bench/active_bytes.py: top_k of the experts, one embedding row). Hold the bench lock
around it: `flock /work/.bench.lock bench/big.py ...`. Generating a missing model is
not timed as part of anything else (write s is printed).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import active_bytes  # noqa: E402
import make_big  # noqa: E402
import mixformat  # noqa: E402

RUN = os.path.join(ROOT, "run")
DECODE = os.path.join(ROOT, "build", "bench_decode")
BANDWIDTH = os.path.join(ROOT, "build", "bench_bandwidth")
MODELS = ["mistral7b_q4_0", "mistral7b_q8_0", "tinyllama_bf16", "dsv2lite_q4_0"]


def load():
    return "%.2f" % os.getloadavg()[0]


def run_rss(cmd, threads):
    """(wall s, stdout, stderr, peak RSS bytes from wait4) of one command."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    t0 = time.time()
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env) as p:
        out, err = p.stdout.read(), p.stderr.read()  # small outputs: no pipe deadlock
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    dt = time.time() - t0
    if p.returncode != 0:
        sys.exit("big: %s: %s" % (" ".join(cmd), err.strip()))
    return dt, out, err, usage.ru_maxrss * 1024


def drop_caches():
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
        return True
    except OSError:
        return False


def read_through(path):
    t0 = time.time()
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass
    return time.time() - t0


def bandwidth(threads):
    _, out, _, _ = run_rss([BANDWIDTH, "512", "7"], threads)
    return float(re.search(r"median_gb_s=([\d.]+)", out).group(1)) * 1e9


def first_token(path):
    t_info, _, _, _ = run_rss([RUN, path, "--info"], 1)
    t_first, _, _, rss = run_rss([RUN, path, "--tokens", "1", "-n", "1", "-t", "0", "--print-ids",
                                  "-c", "256"], 2)
    return t_info, t_first, rss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--dir", default=os.path.join(ROOT, "build-bench"))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--cold", action="store_true")
    ap.add_argument("--tokens", type=int, default=32, help="decode tokens of bench_decode")
    ap.add_argument("--contexts", default="256,4096")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    log = open(a.json, "a") if a.json else None

    def put(**r):
        r.update(load=load(), time=time.strftime("%H:%M:%S", time.gmtime()))
        print("  " + json.dumps(r))
        sys.stdout.flush()
        if log:
            log.write(json.dumps(r) + "\n")
            log.flush()

    for name in a.models.split(","):
        shape, dtype = name.split("_", 1)
        path = os.path.join(a.dir, name + ".bin")
        if not os.path.exists(path):
            t0 = time.time()
            make_big.build(shape, dtype, path)
            put(model=name, metric="write_s", value=round(time.time() - t0, 1))
        cfg, layers, tensors, _ = mixformat.open_model(path)
        act, _ = active_bytes.active_bytes(cfg, layers, tensors)
        mla = any(l["kind"] == "mla" for l in layers)
        put(model=name, metric="file", bytes=os.path.getsize(path), active_bytes_per_token=act)
        if a.cold:
            if drop_caches():
                t_info, t_first, rss = first_token(path)
                put(model=name, metric="cold", info_s=round(t_info, 3),
                    first_token_s=round(t_first, 2), rss=rss)
            else:
                put(model=name, metric="cold", error="cannot drop the page cache (not root)")
        put(model=name, metric="read_through_s", value=round(read_through(path), 2))
        t_info, t_first, rss = first_token(path)
        put(model=name, metric="warm", info_s=round(t_info, 3), first_token_s=round(t_first, 2),
            rss=rss)
        ids = " ".join(str(10 + 7 * i) for i in range(16))
        for th in [int(t) for t in a.threads.split(",")]:
            bw = bandwidth(th)
            _, _, err, rss = run_rss([RUN, path, "--tokens", ids, "-n", "16", "-t", "0",
                                      "--print-ids", "-c", "1024"], th)
            m = re.search(r"prefill: \d+ tokens, ([\d.]+) tok/s \| "
                          r"decode: \d+ tokens, ([\d.]+) tok/s", err)
            put(model=name, metric="run", threads=th, bandwidth=bw,
                prefill16_tok_s=float(m.group(1)), decode16_tok_s=float(m.group(2)), rss=rss)
            modes = ["absorbed", "naive"] if mla else ["absorbed"]
            for ctx in [int(c) for c in a.contexts.split(",")]:
                for mode in modes:
                    if mode == "naive" and ctx > 256:
                        continue  # naive re-expands every cached latent each step: minutes
                    _, out, _, rss = run_rss([DECODE, path, str(ctx), mode, str(a.tokens)], th)
                    tok_s = float(re.search(r"decode_tok_s=([\d.]+)", out).group(1))
                    put(model=name, metric="decode", threads=th, context=ctx,
                        mode=mode if mla else "-", tok_s=tok_s, rss=rss,
                        bandwidth_fraction=round(tok_s * act / bw, 3))
    if log:
        log.close()


if __name__ == "__main__":
    main()
