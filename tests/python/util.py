"""Small helpers shared by the Python tests: paths, running ./run, reading f32 dumps."""
import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = os.path.join(ROOT, "scripts")
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
RUN = os.path.join(ROOT, "run")
CONVERT = os.path.join(SCRIPTS, "convert_hf.py")
if SCRIPTS not in sys.path:
    sys.path.insert(0, SCRIPTS)


def require_run():
    """Fail (not skip) with a clear message when ./run has not been built."""
    if not (os.path.isfile(RUN) and os.access(RUN, os.X_OK)):
        raise AssertionError("%s is missing: build it first with `make run` "
                             "(these tests drive the C runtime)" % RUN)


def run_cli(args, timeout=300):
    """Run ./run with args; return stdout (stderr is kept for the failure message)."""
    require_run()
    p = subprocess.run([RUN] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=timeout)
    if p.returncode != 0:
        raise AssertionError("./run %s exited %d\nstdout: %s\nstderr: %s" % (
            " ".join(map(str, args)), p.returncode, p.stdout[-2000:], p.stderr[-2000:]))
    return p.stdout


def ids_arg(ids):
    return " ".join(str(int(i)) for i in ids)


def read_f32(path, n_rows, n_cols):
    a = np.fromfile(path, dtype="<f4")
    if a.size != n_rows * n_cols:
        raise AssertionError("%s holds %d floats, expected %d x %d" % (path, a.size, n_rows, n_cols))
    return a.reshape(n_rows, n_cols)


def exact(extra):
    """The options for fp32 arithmetic throughout: an f32 KV cache unless extra picks one
    (./run's default cache is f16; tests against fp32 references want f32)."""
    extra = list(extra)
    return extra if "--kv-type" in extra else extra + ["--kv-type", "f32"]


def dump_logits(model, ids, vocab, out_path, extra=()):
    """./run MODEL --tokens IDS -n 0 --dump-logits OUT [extra] -> float32 [len(ids), vocab]
    (with an f32 KV cache unless extra sets --kv-type)."""
    run_cli([model, "--tokens", ids_arg(ids), "-n", "0", "--dump-logits", out_path] + exact(extra))
    return read_f32(out_path, len(ids), vocab)


def greedy_ids(model, ids, n, extra=()):
    """./run MODEL --tokens IDS -n N -t 0 --print-ids [extra] -> generated ids."""
    out = run_cli([model, "--tokens", ids_arg(ids), "-n", str(n), "-t", "0", "--print-ids"]
                  + exact(extra))
    return [int(t) for t in out.split()]


def info(model, extra=()):
    """./run MODEL --info as a dict (KV bytes for an f32 cache unless extra sets --kv-type)."""
    return json.loads(run_cli([model, "--info"] + exact(extra)))


def convert(hf_dir, out_path, dtype="f32"):
    p = subprocess.run([sys.executable, CONVERT, hf_dir, out_path, "--dtype", dtype],
                       capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise AssertionError("convert_hf.py %s failed (%d): %s %s" % (
            hf_dir, p.returncode, p.stdout[-2000:], p.stderr[-2000:]))
    return out_path


def eos_set(eos):
    """An eos id (or list of ids, or None) as a set."""
    if eos is None:
        return set()
    if isinstance(eos, (list, tuple)):
        return {int(e) for e in eos if e is not None and int(e) >= 0}
    return {int(eos)} if int(eos) >= 0 else set()


def greedy_mismatch(got, want, eos_ids):
    """None if ./run's greedy ids `got` agree with the reference `want`, else a message.

    The runtime stops after emitting an EOS id, so `got` may be a prefix of `want`
    that ends exactly at the first EOS; it may not stop anywhere else."""
    if got == want:
        return None
    if got != want[:len(got)]:
        k = next(i for i in range(min(len(got), len(want)) + 1)
                 if i == len(got) or i == len(want) or got[i] != want[i])
        return "greedy ids differ at step %d:\n got  %s\n want %s" % (k, got, want)
    if not got or got[-1] not in eos_ids:
        return "./run stopped after %d of %d tokens, not at an EOS %s:\n got  %s\n want %s" % (
            len(got), len(want), sorted(eos_ids), got, want)
    first = next(i for i, t in enumerate(want) if t in eos_ids)
    if len(got) != first + 1:
        return "./run stopped at a later EOS than the first one (step %d)" % first
    return None
