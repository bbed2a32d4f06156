"""Mixed-attention models: ./run against the float64 numpy reference.

Random small checkpoints written with scripts/mixformat.py whose layers mix MHA,
GQA (head_dim != dim/H, partial rotary width, biases), MQA and MLA (one without
and one with a query LoRA), under several header RoPE set-ups (neox and
interleaved pairing; none, yarn, llama3 and linear scaling; a sliding window;
tied embeddings, FFN biases and the embed/residual/logit scales). For each:

  * ./run --dump-logits with --mla naive and --mla absorbed agrees with
    scripts/reference_forward.py within 1e-4;
  * ./run's greedy continuation equals the reference's, computed step by step by
    re-running the reference on the growing sequence;
  * ./run --info reports each layer's kind and KV bytes per token
    (GQA family: 2 * n_kv_heads * head_dim * 4; MLA: (kv_lora_rank + qk_rope_head_dim) * 4)
    and their sum.

    /usr/bin/python3 -m unittest discover -s tests/python -t . -v
"""
import os
import shutil
import tempfile
import unittest

import numpy as np

from tests.python import util  # also puts scripts/ on sys.path

import mixformat  # noqa: E402
import reference_forward as rf  # noqa: E402

TOL = 1e-4
N_PROMPT = 20
N_GREEDY = 16
# A greedy step whose reference top-1/top-2 gap is below this could flip on fp32
# rounding alone; the comparison stops before such a step (none occur with these seeds,
# checked by test_margins).
GREEDY_MARGIN = 1e-3
D, V, I = 64, 256, 96
EOS = 2

LAYERS = [
    dict(kind="gqa", n_heads=4, n_kv_heads=4, head_dim=16),                      # MHA
    dict(kind="gqa", n_heads=4, n_kv_heads=2, head_dim=24, rope_dim=8,           # GQA, partial
         q_bias=True, k_bias=True, v_bias=True, o_bias=True),
    dict(kind="gqa", n_heads=8, n_kv_heads=1, head_dim=8, rope_dim=4),           # MQA, partial
    dict(kind="mla", n_heads=4, q_lora_rank=0, kv_lora_rank=32, qk_nope_head_dim=16,
         qk_rope_head_dim=8, v_head_dim=16, q_bias=True, kv_bias=True),          # MLA, plain q
    dict(kind="mla", n_heads=2, q_lora_rank=24, kv_lora_rank=16, qk_nope_head_dim=8,
         qk_rope_head_dim=4, v_head_dim=12, o_bias=True),                        # MLA, q-LoRA
    dict(kind="gqa", n_heads=4, n_kv_heads=2, head_dim=16),                      # GQA
]

YARN = dict(type="yarn", factor=4.0, original_max_position_embeddings=16, beta_fast=32.0,
            beta_slow=1.0, mscale=1.0, mscale_all_dim=0.8)
LLAMA3 = dict(type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
              original_max_position_embeddings=64)
VARIANTS = {
    "neox_plain": dict(seed=27, cfg=dict(rope_pairing="neox", rope_theta=10000.0)),
    "interleaved_yarn_tied_mlpbias": dict(seed=31, cfg=dict(
        rope_pairing="interleaved", rope_theta=10000.0, rope_scaling=YARN, tied=True,
        mlp_bias=True)),
    "neox_llama3_window": dict(seed=13, cfg=dict(
        rope_pairing="neox", rope_theta=500000.0, rope_scaling=LLAMA3, sliding_window=6)),
    "interleaved_linear_scales": dict(seed=29, cfg=dict(
        rope_pairing="interleaved", rope_theta=20000.0,
        rope_scaling=dict(type="linear", factor=2.0), embed_scale=1.5, residual_scale=0.8,
        logit_scale=0.7)),
}


def layer_class(l):
    if l["kind"] == "mla":
        return "mla"
    h, kv = l["n_heads"], l.get("n_kv_heads", l["n_heads"])
    return "mha" if kv == h else ("mqa" if kv == 1 else "gqa")


def kv_bytes(l):
    if l["kind"] == "mla":
        return (l["kv_lora_rank"] + l["qk_rope_head_dim"]) * 4
    return 2 * l.get("n_kv_heads", l["n_heads"]) * l["head_dim"] * 4


def random_tensors(cfg, layers, rng):
    out = {}
    for name, shape in mixformat.expected_tensors(cfg, layers).items():
        base = name.rsplit(".", 1)[-1]
        if base == "norm" or base.endswith("_norm"):
            a = 1.0 + 0.1 * rng.standard_normal(shape)
        elif base.startswith("b"):
            a = 0.05 * rng.standard_normal(shape)
        else:
            a = 0.08 * rng.standard_normal(shape)
        out[name] = a.astype(np.float32)
    return out


def build(path, variant):
    v = VARIANTS[variant]
    rng = np.random.default_rng(v["seed"])
    cfg = dict(dim=D, n_layers=len(LAYERS), vocab_size=V, max_seq_len=128, hidden_dim=I,
               norm_eps=1e-5, bos_id=1, eos_id=EOS)
    cfg.update(v["cfg"])
    tensors = random_tensors(cfg, LAYERS, rng)
    with open(os.path.join(util.FIXTURES, "tiny_spm.model"), "rb") as f:
        tok = f.read()
    mixformat.write_model(path, cfg, LAYERS, tensors, tokenizer_bytes=tok)
    prompt = [1] + [int(t) for t in rng.integers(3, V, N_PROMPT - 1)]
    return prompt


def reference_greedy(model, prompt, n):
    """Step by step: argmax of the reference on the growing sequence; stops after EOS."""
    seq, out, margins = list(prompt), [], []
    for _ in range(n):
        last = rf.logits(model, seq)[-1]
        top = np.sort(last)[::-1]
        nxt = int(np.argmax(last))
        out.append(nxt)
        margins.append(float(top[0] - top[1]))
        seq.append(nxt)
        if nxt == EOS:
            break
    return out, margins


def _find(d, *words):
    """The first key of dict d whose name contains all the words (tolerant of naming)."""
    for k in d:
        if all(w in k.lower() for w in words):
            return k
    return None


class MixedTest(unittest.TestCase):
    tmp = None
    models = {}

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="mixattn-mixed-")
        cls.models = {}
        for name in VARIANTS:
            path = os.path.join(cls.tmp, name + ".bin")
            prompt = build(path, name)
            cls.models[name] = (path, prompt, rf.load(path))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_layer_mix(self):
        classes = [layer_class(l) for l in LAYERS]
        for c in ("mha", "gqa", "mqa", "mla"):
            self.assertIn(c, classes)
        mla = [l for l in LAYERS if l["kind"] == "mla"]
        self.assertTrue(any(l["q_lora_rank"] == 0 for l in mla))
        self.assertTrue(any(l["q_lora_rank"] > 0 for l in mla))
        self.assertTrue(any(l["kind"] == "gqa" and l.get("rope_dim", l["head_dim"]) < l["head_dim"]
                            for l in LAYERS))

    def test_logits(self):
        util.require_run()
        for name, (path, prompt, m) in self.models.items():
            want = rf.logits(m, prompt)
            for mode in ("naive", "absorbed"):
                with self.subTest(variant=name, mla=mode):
                    out = os.path.join(self.tmp, "%s.%s.f32" % (name, mode))
                    got = util.dump_logits(path, prompt, V, out, ["--mla", mode])
                    err = float(np.abs(got - want).max())
                    self.assertLessEqual(err, TOL, "%s --mla %s: max |./run - reference| = %.3g"
                                         % (name, mode, err))

    def test_margins(self):
        # The seeds are chosen so that no greedy step is a near-tie.
        for name, (path, prompt, m) in self.models.items():
            with self.subTest(variant=name):
                _, margins = reference_greedy(m, prompt, N_GREEDY)
                self.assertGreaterEqual(min(margins), GREEDY_MARGIN)

    def test_greedy(self):
        util.require_run()
        for name, (path, prompt, m) in self.models.items():
            want, margins = reference_greedy(m, prompt, N_GREEDY)
            k = next((i for i, g in enumerate(margins) if g < GREEDY_MARGIN), len(want))
            for mode in ("naive", "absorbed"):
                with self.subTest(variant=name, mla=mode):
                    got = util.greedy_ids(path, prompt, N_GREEDY, ["--mla", mode])
                    if k == len(want):
                        msg = util.greedy_mismatch(got, want, {EOS})
                        self.assertIsNone(msg, "%s --mla %s: %s" % (name, mode, msg))
                    else:
                        self.assertEqual(got[:k], want[:k], "%s --mla %s" % (name, mode))

    def test_info(self):
        util.require_run()
        want_layers = [(layer_class(l), kv_bytes(l)) for l in LAYERS]
        for name, (path, prompt, m) in self.models.items():
            with self.subTest(variant=name):
                info = util.info(path)
                lkey = "layers" if "layers" in info else _find(info, "layer")
                self.assertIsNotNone(lkey, "no per-layer list in --info: %s" % sorted(info))
                layers = info[lkey]
                self.assertEqual(len(layers), len(LAYERS))
                total = 0
                for i, (rep, (cls, nbytes)) in enumerate(zip(layers, want_layers)):
                    kkey = "kind" if "kind" in rep else (_find(rep, "kind") or _find(rep, "attn")
                                                         or _find(rep, "type"))
                    self.assertIsNotNone(kkey, "layer %d: no kind in %s" % (i, rep))
                    kind = str(rep[kkey]).lower()
                    if kind != cls:
                        # Accept the family name "gqa" for MHA/MQA layers only when the
                        # layer's own head counts say which one it is.
                        hkey, kvkey = _find(rep, "n_heads"), _find(rep, "kv_heads")
                        ok = (kind == "gqa" and cls in ("mha", "mqa") and hkey and kvkey and
                              layer_class(dict(kind="gqa", n_heads=rep[hkey],
                                               n_kv_heads=rep[kvkey])) == cls)
                        self.assertTrue(ok, "layer %d: --info kind %r, expected %r (%s)"
                                        % (i, kind, cls, rep))
                    bkey = _find(rep, "kv", "byte")
                    self.assertIsNotNone(bkey, "layer %d: no KV bytes in %s" % (i, rep))
                    self.assertEqual(int(rep[bkey]), nbytes, "layer %d (%s) KV bytes/token" % (i, cls))
                    total += nbytes
                tkey = "kv_bytes_per_token" if "kv_bytes_per_token" in info else \
                    _find(info, "kv", "byte", "token")
                self.assertIsNotNone(tkey, "no total KV bytes per token in --info: %s" % sorted(info))
                self.assertEqual(int(info[tkey]), total)


if __name__ == "__main__":
    unittest.main()
