"""Mixture-of-experts layers and Qwen3's qk-norm in ./run, against the float64 reference.

A random model written with scripts/mixformat.py mixes every router the format
describes (noaux_tc with a negative correction bias and shared experts on an MLA
layer, group_limited_greedy, greedy with top_k = n_experts and renormalisation)
beside a dense layer with per-head q/k norms. ./run must match
scripts/reference_forward.py (float64 numpy, written from the notes) within 1e-4 on
every prompt position (prefill, both MLA paths) and token for token when decoding
greedily (one token at a time, which reads only the chosen experts). Then every
field of the feed-forward descriptor is corrupted in turn: one error line, exit 1.

The transformers fixtures (tests/fixtures/deepseek_v*_moe_*, qwen3_*, mixtral,
deepseek_v3_fp8*) are covered by test_parity.py.
"""
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import util  # noqa: E402

import mixformat  # noqa: E402
import reference_forward as rf  # noqa: E402

TOL = 1e-4
D, V = 32, 64
PROMPT = [1, 7, 33, 2, 60, 5, 18, 44, 9, 27, 3, 51, 12, 38, 21, 6, 49, 30]

MOE = dict(ffn="moe", expert_hidden=32)
LAYERS = [
    dict(kind="gqa", n_heads=4, n_kv_heads=2, head_dim=12, qk_norm=True, ffn="dense",
         hidden_dim=40),
    dict(kind="mla", n_heads=4, q_lora_rank=16, kv_lora_rank=16, qk_nope_head_dim=8,
         qk_rope_head_dim=8, v_head_dim=8, n_experts=8, top_k=3, shared_hidden=64,
         scoring="sigmoid", topk_method="noaux_tc", n_group=4, topk_group=2,
         norm_topk_prob=True, routed_scaling_factor=2.5, **MOE),
    dict(kind="gqa", n_heads=4, n_kv_heads=4, head_dim=8, n_experts=8, top_k=2,
         scoring="softmax", topk_method="group_limited_greedy", n_group=2, topk_group=1,
         routed_scaling_factor=16.0, **MOE),
    dict(kind="gqa", n_heads=4, n_kv_heads=1, head_dim=8, n_experts=4, top_k=4,
         scoring="softmax", topk_method="greedy", norm_topk_prob=True, **MOE),
]


def make_model(path, rng):
    cfg = dict(dim=D, n_layers=len(LAYERS), vocab_size=V, max_seq_len=64, hidden_dim=40,
               norm_eps=1e-6, tied=False, bos_id=1, eos_id=2, rope_theta=10000.0)
    shapes = mixformat.expected_tensors(cfg, LAYERS)
    t = {}
    for name, shape in shapes.items():
        if len(shape) == 1:
            t[name] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            t[name] = (0.15 * rng.standard_normal(shape)).astype(np.float32)
    # a negative correction bias: the -inf mask of the dropped groups then matters
    t["layers.1.router_bias"] = (-0.6 + 0.3 * rng.standard_normal(8)).astype(np.float32)
    t["layers.1.router"] *= 3  # spread the router scores
    mixformat.write_model(path, cfg, LAYERS, t)
    return cfg, t


class MoERuntimeTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="mixattn-moe-")
        cls.path = os.path.join(cls.tmp, "moe.bin")
        cls.cfg, cls.tensors = make_model(cls.path, np.random.default_rng(10))
        cls.ref = rf.load(cls.path)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_logits_match_reference(self):
        want = rf.logits(self.ref, PROMPT)
        for mode in ("absorbed", "naive"):
            with self.subTest(mla=mode):
                out = os.path.join(self.tmp, "lg.f32")
                got = util.dump_logits(self.path, PROMPT, V, out, ["--mla", mode])
                err = float(np.abs(got - want).max())
                self.assertLessEqual(err, TOL, "max |./run - reference| = %.3g" % err)

    def test_greedy_decode_matches_reference(self):
        want = rf.greedy(self.ref, PROMPT[:6], 12, eos_id=2)
        got = util.greedy_ids(self.path, PROMPT[:6], 12)
        self.assertIsNone(util.greedy_mismatch(got, want, {2}))

    def test_mask_fill_matters(self):
        # the test can fail: with a 0.0 fill for the dropped groups (older transformers)
        # the reference itself moves by far more than the tolerance
        want = rf.logits(self.ref, PROMPT)
        orig = rf.np.where

        def where_zero(c, x, y):
            return orig(c, x, 0.0) if np.isscalar(y) and y == -np.inf else orig(c, x, y)
        rf.np.where = where_zero
        try:
            other = rf.logits(self.ref, PROMPT)
        finally:
            rf.np.where = orig
        self.assertGreater(float(np.abs(other - want).max()), 100 * TOL)

    def test_info(self):
        info = util.info(self.path)
        self.assertEqual(info["format_version"], 2)
        kinds = [l["ffn"] for l in info["layers"]]
        self.assertEqual(kinds, ["dense", "moe", "moe", "moe"])
        self.assertTrue(info["layers"][0]["qk_norm"])
        self.assertEqual(info["layers"][0]["ffn_hidden"], 40)
        l1 = info["layers"][1]
        self.assertEqual((l1["n_experts"], l1["top_k"], l1["expert_hidden"], l1["shared_hidden"],
                          l1["scoring"], l1["topk_method"], l1["n_group"], l1["topk_group"],
                          l1["norm_topk_prob"]),
                         (8, 3, 32, 64, "sigmoid", "noaux_tc", 4, 2, True))
        n_params = sum(int(np.prod(a.shape)) for a in self.tensors.values())
        skipped = (8 - 3) * 3 * 32 * D + (8 - 2) * 3 * 32 * D  # unchosen experts
        self.assertEqual(info["n_params"], n_params)
        self.assertEqual(info["active_params"], n_params - skipped)
        self.assertEqual(info["hidden_dim"], 64)  # widest FFN (the shared expert)
        # bytes a decode step reads (f32 file, untied): one embedding row, of each stacked
        # expert tensor only the top_k experts' share, everything else whole
        want = 0
        for name, a in self.tensors.items():
            nbytes = 4 * int(np.prod(a.shape))
            if name == "tok_embeddings":
                nbytes //= a.shape[0]
            elif ".experts." in name:
                layer = info["layers"][int(name.split(".")[1])]
                nbytes = nbytes // layer["n_experts"] * layer["top_k"]
            want += nbytes
        self.assertEqual(info["weight_bytes_per_token"], want)

    # -- corrupt feed-forward descriptors ------------------------------------------------

    def patched(self, layer, offset, fmt, value, name):
        with open(self.path, "rb") as f:
            buf = bytearray(f.read())
        struct.pack_into(fmt, buf, 256 + 128 * layer + offset, value)
        path = os.path.join(self.tmp, name + ".bin")
        with open(path, "wb") as f:
            f.write(bytes(buf))
        return path

    def assert_load_error(self, path, pattern):
        p = subprocess.run([util.RUN, path, "--info"], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 1, p.stderr)
        lines = p.stderr.splitlines()
        self.assertEqual(len(lines), 1, p.stderr)
        self.assertRegex(lines[0], r"^run: error: .*" + pattern)
        self.assertEqual(p.stdout, "")

    def test_bad_descriptors(self):
        util.require_run()
        cases = [  # (layer, byte offset in the descriptor, format, value, expected text)
            (0, 64, "<I", 2, "unknown feed-forward kind 2"),
            (0, 68, "<I", 0, "dense hidden_dim 0"),
            (0, 68, "<I", 65, "dense hidden_dim 65 not in \\[1, 64\\]"),
            (1, 72, "<I", 0, "bad n_experts 0"),
            (1, 76, "<I", 9, "top_k 9 not in \\[1, n_experts 8\\]"),
            (1, 76, "<I", 0, "top_k 0"),
            (1, 80, "<I", 0, "expert_hidden 0"),
            (1, 84, "<I", 65, "shared_hidden 65"),
            (1, 88, "<I", 2, "unknown router scoring 2"),
            (1, 92, "<I", 3, "unknown routing method 3"),
            (1, 96, "<I", 3, "not divisible by n_group 3"),
            (1, 96, "<I", 0, "n_group 0"),
            (1, 100, "<I", 5, "topk_group 5 not in \\[1, n_group 4\\]"),
            (1, 100, "<I", 1, "top_k 3 > the 2 experts of the kept groups"),
            (1, 104, "<I", 2, "unknown MoE flags 0x2"),
            (1, 108, "<f", float("nan"), "routed_scaling_factor"),
            (1, 108, "<f", 0.0, "routed_scaling_factor"),
            (2, 92, "<I", 0, "greedy routing with n_group 2"),
            (3, 96, "<I", 4, "greedy routing with n_group 4"),
        ]
        for i, (layer, off, fmt, value, pattern) in enumerate(cases):
            with self.subTest(case=pattern):
                self.assert_load_error(self.patched(layer, off, fmt, value, "bad%d" % i), pattern)

    def test_noaux_needs_two_experts_per_group(self):
        with open(self.path, "rb") as f:
            buf = bytearray(f.read())
        base = 256 + 128 * 1
        struct.pack_into("<II", buf, base + 96, 8, 8)  # 8 groups of 1, all kept
        path = os.path.join(self.tmp, "noaux1.bin")
        with open(path, "wb") as f:
            f.write(bytes(buf))
        self.assert_load_error(path, "noaux_tc needs 2 experts per group")

    def test_router_must_be_f32(self):
        cfg = dict(self.cfg)
        path = os.path.join(self.tmp, "bf16router.bin")
        # write_model refuses a non-f32 router ...
        with self.assertRaises(mixformat.FormatError):
            mixformat.write_model(path, cfg, LAYERS, self.tensors,
                                  dtypes={"layers.2.router": "bf16"})
        # ... and so does the loader, for a file written by something else
        with open(self.path, "rb") as f:
            buf = bytearray(f.read())
        d0 = 256 + 128 * len(LAYERS)
        for i in range(struct.unpack_from("<I", buf, 120)[0]):
            e = d0 + 128 * i
            if buf[e:e + 64].split(b"\0", 1)[0] == b"layers.2.router":
                struct.pack_into("<I", buf, e + 64, 2)                    # bf16
                nb = struct.unpack_from("<Q", buf, e + 112)[0]
                struct.pack_into("<Q", buf, e + 112, nb // 2)
        with open(path, "wb") as f:
            f.write(bytes(buf))
        self.assert_load_error(path, "layers.2.router must be f32")

    def test_misshapen_expert_tensor(self):
        with open(self.path, "rb") as f:
            buf = bytearray(f.read())
        d0 = 256 + 128 * len(LAYERS)
        for i in range(struct.unpack_from("<I", buf, 120)[0]):
            e = d0 + 128 * i
            if buf[e:e + 64].split(b"\0", 1)[0] == b"layers.3.experts.w2":
                # [4, 32, 32] -> [2, 64, 32]: the same bytes, the wrong shape
                struct.pack_into("<QQ", buf, e + 72, 2, 64)
        path = os.path.join(self.tmp, "shape.bin")
        with open(path, "wb") as f:
            f.write(bytes(buf))
        self.assert_load_error(path, r"tensor layers\.3\.experts\.w2 has shape \[2,64,32\], "
                               r"expected \[4,32,32\]")


if __name__ == "__main__":
    unittest.main()
