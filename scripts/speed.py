"""How this project measures speed (never in tests): runs ./run and build/bench_decode
with a given number of OpenMP threads and parses their reports. Used by bench/bench.py
(`make bench`) and scripts/compare.py (`make compare`).

    prefill_decode(model, threads, n_prompt, n_gen, repeats) -> ([prefill tok/s], [decode tok/s])
    decode_at(model, context, mode, n_tokens, threads, repeats) -> ([decode tok/s], kv_bytes_per_token)
    best_median(values) -> (best, median)
"""
import os
import re
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(ROOT, "run")
BENCH_DECODE = os.path.join(ROOT, "build", "bench_decode")


def sh(cmd, threads, who="speed"):
    """(stdout, stderr) of cmd under OMP_NUM_THREADS=threads; exits with its stderr on failure."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit("%s: %s failed: %s" % (who, " ".join(cmd[:3]), r.stderr.strip()))
    return r.stdout, r.stderr


def prefill_decode(model, threads, n_prompt, n_gen, repeats, prompt_ids=None):
    """./run's own report, `repeats` times: a prompt of n_prompt ids (or prompt_ids), then
    n_gen greedy tokens. Returns the lists of prefill and decode tok/s."""
    ids = prompt_ids or " ".join(str(10 + 7 * i) for i in range(n_prompt))
    prefill, decode = [], []
    for _ in range(repeats):
        _, err = sh([RUN, model, "--tokens", ids, "-n", str(n_gen), "-t", "0", "--print-ids"], threads)
        m = re.search(r"prefill: \d+ tokens, ([\d.]+) tok/s \| decode: \d+ tokens, ([\d.]+) tok/s", err)
        prefill.append(float(m.group(1)))
        decode.append(float(m.group(2)))
    return prefill, decode


def decode_at(model, context, mode, n_tokens, threads, repeats=3):
    """build/bench_decode: decode tok/s with the KV cache filled to `context` tokens,
    `repeats` times. Returns (list of tok/s, kv_bytes_per_token)."""
    speeds = []
    for _ in range(repeats):
        out, _ = sh([BENCH_DECODE, model, str(context), mode, str(n_tokens)], threads)
        fields = dict(kv.split("=") for kv in out.split())
        speeds.append(float(fields["decode_tok_s"]))
    return speeds, int(fields["kv_bytes_per_token"])


def best_median(values):
    """This machine is a shared VM whose memory bandwidth varies by +-20% from run to
    run, so reports give the best and the median."""
    return max(values), float(statistics.median(values))
