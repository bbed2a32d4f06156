"""MIXATTN_ISA: ./run computes the same greedy tokens with every instruction set this CPU
has (scalar, avx2, avx512: the kernels agree within float rounding, and greedy decoding of a
shipped model is far from ties), and an unknown or unsupported name is one error line and a
non-zero exit."""
import os
import subprocess
import unittest

from tests.python import util

MODEL = os.path.join(util.ROOT, "weights", "gqa.bin")


def run_env(isa, args):
    env = dict(os.environ, MIXATTN_ISA=isa)
    util.require_run()
    return subprocess.run([util.RUN, MODEL] + args, capture_output=True, text=True, env=env,
                          timeout=300)


@unittest.skipUnless(os.path.isfile(MODEL), "weights/gqa.bin is absent")
class InstructionSets(unittest.TestCase):
    ARGS = ["-p", "Once upon a time", "-n", "24", "-t", "0", "--print-ids"]

    def test_every_isa_same_greedy_tokens(self):
        outs = {}
        for isa in ("scalar", "avx2", "avx512"):
            p = run_env(isa, self.ARGS)
            if p.returncode != 0 and "cannot run it" in p.stderr:
                continue  # this CPU lacks it: the error path is tested below
            self.assertEqual(p.returncode, 0, p.stderr)
            outs[isa] = p.stdout.split()
        self.assertIn("scalar", outs)
        for isa, ids in outs.items():
            self.assertEqual(ids, outs["scalar"], isa)
        self.assertEqual(len(outs["scalar"]), 24)

    def test_bad_names(self):
        for bad in ("sse9", "AVX2", "avx"):
            p = run_env(bad, self.ARGS)
            self.assertNotEqual(p.returncode, 0)
            self.assertGreater(p.returncode, 0)  # an exit status, not a signal
            lines = p.stderr.strip().splitlines()
            self.assertEqual(len(lines), 1, p.stderr)
            self.assertTrue(lines[0].startswith("run: error: MIXATTN_ISA="), lines[0])
            self.assertEqual(p.stdout, "")


if __name__ == "__main__":
    unittest.main()
