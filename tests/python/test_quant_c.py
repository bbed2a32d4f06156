"""The numpy writers (scripts/mixformat.py) and the C reference quantizers (kernels/quant.c)
produce the same bytes, bit for bit, for q8_0, q4_0, bf16 and f16, on random values and on
the edge cases of their rounding rules (halves, ties of the largest magnitude, the value just
below one half, zero blocks, f16 subnormal scales)."""
import os
import subprocess
import unittest

import numpy as np

from tests.python import util

TOOL = os.path.join(util.ROOT, "build", "tests", "quantize_rows")

try:
    import mixformat
except ImportError:  # pragma: no cover
    mixformat = None


def edge_values():
    rng = np.random.default_rng(5)
    blocks = [rng.standard_normal(32 * 400).astype(np.float32) * np.float32(0.05)]
    for scale in (1e-30, 1e-6, 1.0, 3e4):
        blocks.append((rng.uniform(-1, 1, 32 * 50) * scale).astype(np.float32))
    b = np.zeros(32 * 8, np.float32)                     # a zero block and hand-made ones
    b[32:64] = np.arange(32) - 16                        # integers, max |x| = 16 (first of ties)
    b[64] = 127; b[65:96] = np.float32(0.5) + np.arange(31)  # q8_0 d = 1: halves away from zero
    b[96] = -8; b[97:128] = np.float32(0.5) - np.arange(31) % 16  # q4_0 d = 1: halves
    b[128] = 127; b[129] = np.float32(0.49999997)        # just below one half
    b[160] = 8; b[161] = -8                              # equal magnitudes, the first wins
    b[192] = -8; b[193] = 8
    b[224:256] = np.float32(1e-7)                        # a subnormal f16 scale
    blocks.append(b)
    return np.concatenate(blocks)


@unittest.skipIf(mixformat is None or not hasattr(mixformat, "quantize_q8_0"),
                 "scripts/mixformat.py has no block quantizers yet")
class QuantizersAgree(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.access(TOOL, os.X_OK):
            raise AssertionError("%s is missing: build it with `make %s`" % (TOOL, "build/tests/quantize_rows"))
        cls.x = edge_values()

    def c_bytes(self, dtype):
        p = subprocess.run([TOOL, dtype], input=self.x.astype("<f4").tobytes(), capture_output=True,
                           timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        return p.stdout

    def test_q8_0(self):
        self.assertEqual(self.c_bytes("q8_0"), mixformat.quantize_q8_0(self.x))

    def test_q4_0(self):
        self.assertEqual(self.c_bytes("q4_0"), mixformat.quantize_q4_0(self.x))

    def test_bf16(self):
        self.assertEqual(self.c_bytes("bf16"), mixformat.to_bf16_bits(self.x).astype("<u2").tobytes())

    def test_f16(self):
        self.assertEqual(self.c_bytes("f16"), self.x.astype("<f2").tobytes())


if __name__ == "__main__":
    unittest.main()
