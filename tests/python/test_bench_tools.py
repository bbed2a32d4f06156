"""build/bench_prefill, build/bench_decode, build/bench_bandwidth and build/bench_kernels, the
timing tools behind `make bench`, `make bench-kernels` and the side by side: bad arguments and bad checkpoints give one error line and a non-zero exit (never a
crash), and a good run prints its one result line. What they time is not tested here (speed
is measured in benchmarks, not in tests)."""
import os
import re
import subprocess
import tempfile
import unittest

from tests.python import util

BUILD = os.path.join(util.ROOT, "build")
MODEL = os.path.join(util.ROOT, "weights", "gqa.bin")


def tool(name, args):
    path = os.path.join(BUILD, name)
    if not os.access(path, os.X_OK):
        raise AssertionError("%s is missing: build it with `make %s`" % (path, "build/" + name))
    return subprocess.run([path] + args, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


@unittest.skipUnless(os.path.isfile(MODEL), "weights/gqa.bin is absent")
class BenchTools(unittest.TestCase):
    def assert_one_error(self, p, what):
        self.assertNotEqual(p.returncode, 0, what)
        self.assertGreater(p.returncode, 0, "%s: killed by a signal" % what)  # not a crash
        lines = p.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, "%s: %r" % (what, p.stderr))
        self.assertRegex(lines[0], r"^(usage: )?bench_(prefill|decode|bandwidth|kernels)", what)
        self.assertEqual(p.stdout, "", what)

    def test_prefill_bad_arguments(self):
        for args in ([], [MODEL], [MODEL, "8"], [MODEL, "abc", "2"], [MODEL, "8x", "2"],
                     [MODEL, "", "2"], [MODEL, "0", "2"], [MODEL, "-3", "2"],
                     [MODEL, "8", "0"], [MODEL, "8", "1001"], [MODEL, "99999999999", "2"],
                     [MODEL, "8", "2", "q4_0"], [MODEL, "8", "2", "F16"], [MODEL, "8", "2", "f16", "x"],
                     [MODEL, "100000", "1"],  # longer than the model's context
                     ["/nonexistent/m.bin", "8", "2"], [os.path.dirname(MODEL), "8", "2"]):
            self.assert_one_error(tool("bench_prefill", args), " ".join(args))

    def test_decode_bad_arguments(self):
        for args in ([], [MODEL], [MODEL, "64", "absorbed"], [MODEL, "64x", "absorbed", "8"],
                     [MODEL, "", "absorbed", "8"], [MODEL, "64", "absorbed", "8.5"],
                     [MODEL, "64", "absorbed", "0"], [MODEL, "64", "absorbed", "64"],
                     [MODEL, "1", "absorbed", "1"], [MODEL, "99999999999", "absorbed", "8"],
                     [MODEL, "64", "Absorbed", "8"], [MODEL, "64", "", "8"], [MODEL, "64", "fast", "8"],
                     [MODEL, "64", "absorbed", "8", "f16", "x"]):
            self.assert_one_error(tool("bench_decode", args), " ".join(args))

    def test_decode_good_run(self):
        for mode in ("absorbed", "naive"):
            p = tool("bench_decode", [MODEL, "64", mode, "4", "bf16"])
            self.assertEqual(p.returncode, 0, p.stderr)
            m = re.fullmatch(r"context=64 mode=%s threads=1 kv_type=bf16 decode_tok_s=([\d.]+) "
                             r"kv_bytes_per_token=(\d+) kv_bytes=(\d+)\n" % mode, p.stdout)
            self.assertIsNotNone(m, p.stdout)
            self.assertGreater(float(m.group(1)), 0)
            # the cache holds 64 tokens of bf16 rows
            self.assertEqual(int(m.group(3)), 64 * int(m.group(2)))

    def test_decode_bad_kv_type(self):
        for kv in ("q4_0", "", "f16 "):
            self.assert_one_error(tool("bench_decode", [MODEL, "64", "absorbed", "8", kv]), kv)

    def test_bandwidth_and_kernels_bad_arguments(self):
        # all rejected before any buffer is allocated or any timing starts
        for args in (["8"], ["64x"], [""], ["99999999"], ["64", "0"], ["64", "1001"], ["64", "3", "x"]):
            self.assert_one_error(tool("bench_bandwidth", args), "bench_bandwidth " + " ".join(args))
        for args in (["stories"], ["ALL"], [""], ["all", "0"], ["all", "2x"], ["all", "-1"],
                     ["stories15M"] + ["1"] * 9):
            self.assert_one_error(tool("bench_kernels", args), "bench_kernels " + " ".join(args))

    def test_bandwidth_good_run(self):
        p = tool("bench_bandwidth", ["16", "3"])
        self.assertEqual(p.returncode, 0, p.stderr)
        m = re.fullmatch(r"bandwidth_gb_s=([\d.]+) median_gb_s=([\d.]+) threads=1 mib=16 checksum=\S+\n", p.stdout)
        self.assertIsNotNone(m, p.stdout)
        self.assertGreaterEqual(float(m.group(1)), float(m.group(2)))
        self.assertGreater(float(m.group(2)), 0)

    def test_truncated_and_garbage_checkpoints(self):
        with open(MODEL, "rb") as f:
            data = f.read()
        with tempfile.TemporaryDirectory() as d:
            for name, body in (("trunc.bin", data[: len(data) // 2]), ("head.bin", data[:40]),
                               ("garbage.bin", os.urandom(4096)), ("empty.bin", b"")):
                path = os.path.join(d, name)
                with open(path, "wb") as f:
                    f.write(body)
                self.assert_one_error(tool("bench_prefill", [path, "8", "2"]), name)
                self.assert_one_error(tool("bench_decode", [path, "64", "absorbed", "8"]), name)

    def test_prefill_good_run(self):
        p = tool("bench_prefill", [MODEL, "16", "3", "q8_0"])
        self.assertEqual(p.returncode, 0, p.stderr)
        m = re.fullmatch(r"n_prompt=16 threads=1 kv_type=q8_0 prefill_tok_s_best=([\d.]+) "
                         r"prefill_tok_s_median=([\d.]+) first_tok_s=([\d.]+)\n", p.stdout)
        self.assertIsNotNone(m, p.stdout)
        best, median, first = map(float, m.groups())
        self.assertGreater(median, 0)
        self.assertGreaterEqual(best, median)  # the best of the sorted reps, then the middle
        self.assertGreater(first, 0)


if __name__ == "__main__":
    unittest.main()
