"""bench/make_big.py's random codes and bench/active_bytes.py's byte count (numpy only)."""
import os
import sys
import tempfile
import unittest

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench"))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import active_bytes  # noqa: E402
import make_big  # noqa: E402
import mixformat  # noqa: E402


class RandomCodes(unittest.TestCase):
    def test_codes_are_zero_mean(self):
        # raw uniform codes have mean -0.5 code units; the generator must remove that bias
        for dt in ("q4_0", "q8_0"):
            raw = make_big.RandomTensor((256, 1024), 7, 0.03).encoded(0, 256, dt)
            w = mixformat.dequantize(raw, dt, (256, 1024))
            self.assertLess(abs(float(w.mean())) / float(w.std()), 0.01, dt)
            d = float(np.frombuffer(raw[:2], np.float16)[0])
            if dt == "q4_0":
                self.assertGreater(float(w.min()), -7.5 * d)  # code -8 never appears
            else:
                self.assertGreater(float(w.min()), -127.5 * d)


class ActiveBytes(unittest.TestCase):
    def test_moe_counts_top_k_experts_and_one_embedding_row(self):
        D, V, E, K, Ie, Is, I = 64, 96, 8, 2, 32, 64, 128
        cfg = dict(dim=D, n_layers=2, vocab_size=V, max_seq_len=64, hidden_dim=I,
                   norm_eps=1e-6)
        mla = dict(kind="mla", n_heads=2, q_lora_rank=0, kv_lora_rank=32,
                   qk_nope_head_dim=32, qk_rope_head_dim=32, v_head_dim=32)
        moe = dict(mla, ffn="moe", n_experts=E, top_k=K, expert_hidden=Ie, shared_hidden=Is)
        layers = [mla, moe]
        rng = np.random.default_rng(0)
        tensors = {n: rng.standard_normal(s).astype(np.float32) * 0.1
                   for n, s in mixformat.expected_tensors(cfg, layers).items()}
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "m.bin")
            mixformat.write_model(path, cfg, layers, tensors, dtype="q8_0")
            got, _ = active_bytes.active_bytes(*mixformat.open_model(path)[:3])
        q8 = lambda r, c: r * c // 32 * 34  # noqa: E731
        attn = q8(2 * 64, D) + q8(64, D) + q8(2 * 32, 32) * 2 + q8(D, 64)
        norms = 2 * 4 * (2 * D + 32) + 4 * D  # attn/ffn/kv_a norms of 2 layers, final norm
        want = (q8(1, D) + q8(V, D) + norms + 2 * attn  # one embedding row, head, attention
                + 2 * q8(I, D) + q8(D, I)  # dense layer 0
                + E * D * 4  # router, f32
                + K * (2 * q8(Ie, D) + q8(D, Ie))  # top_k routed experts
                + 2 * q8(Is, D) + q8(D, Is))  # shared experts
        self.assertEqual(got, want)


if __name__ == "__main__":
    unittest.main()
