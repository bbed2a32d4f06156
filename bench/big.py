#!/usr/bin/env python3
"""`make bench-big`: real models' shapes with random weights, written straight to their
type by bench/make_big.py (cached in build-bench/): Mistral-7B in q4_0 and q8_0,
TinyLlama-1.1B in bf16. For each: file size, load time (./run --info: map and validate),
time to the first generated token from a cold page cache is not measured (the file was
just written, so it is in the page cache), tok/s of prefill and decode, and peak resident
memory (VmHWM).

Usage: bench/big.py [--threads 2] [--out build-bench] [--only mistral7b_q4_0,...]
"""
import argparse
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import make_big  # noqa: E402

RUN = os.path.join(ROOT, "run")
MODELS = [("mistral7b", "q4_0"), ("mistral7b", "q8_0"), ("tinyllama", "bf16")]


def measure(path, threads, n_prompt, n_gen):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    t0 = time.time()
    r = subprocess.run([RUN, path, "--info"], capture_output=True, text=True, env=env)
    load_s = time.time() - t0
    if r.returncode != 0:
        sys.exit("big: %s" % r.stderr.strip())
    ids = " ".join(str(10 + 7 * i) for i in range(n_prompt))
    with open(os.devnull, "w") as null:
        p = subprocess.Popen([RUN, path, "--tokens", ids, "-n", str(n_gen), "-t", "0", "--print-ids",
                              "-c", "1024"], stdout=null, stderr=subprocess.PIPE, text=True, env=env)
        err = p.stderr.read()
        _, status, usage = os.wait4(p.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit("big: %s" % err.strip())
    m = re.search(r"prefill: \d+ tokens, ([\d.]+) tok/s \| decode: \d+ tokens, ([\d.]+) tok/s", err)
    return load_s, float(m.group(1)), float(m.group(2)), usage.ru_maxrss * 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(ROOT, "build-bench"))
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    print("| model | type | file GB | write s | load s | prefill tok/s (16 tokens) "
          "| decode tok/s (16 tokens) | VmHWM GB |")
    print("|---|---|---|---|---|---|---|---|")
    for shape, dtype in MODELS:
        name = "%s_%s" % (shape, dtype)
        if a.only and name not in a.only.split(","):
            continue
        path = os.path.join(a.out, name + ".bin")
        write_s = float("nan")
        if not os.path.exists(path):
            t0 = time.time()
            make_big.build(shape, dtype, path)
            write_s = time.time() - t0
        load_s, pre, dec, rss = measure(path, a.threads, 16, 16)
        print("| %s | %s | %.2f | %.0f | %.3f | %.1f | %.2f | %.2f |"
              % (shape, dtype, os.path.getsize(path) / 1e9, write_s, load_s, pre, dec, rss / 1e9))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
