"""Tests for scripts/convert_hf.py (and scripts/safetensors_np.py).

Each test writes a tiny synthetic Hugging Face folder (config.json + safetensors)
with numpy, runs the converter as a subprocess, reads the result back with
mixformat.read_model and compares against the arrays the test itself wrote.

    /usr/bin/python3 -m unittest discover -s tests/python -t . -v
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest

import numpy as np

from tests.python import util  # also puts scripts/ on sys.path

ROOT, SCRIPTS, CONVERT = util.ROOT, util.SCRIPTS, util.CONVERT

import mixformat  # noqa: E402
import safetensors_np as st  # noqa: E402

DT_F32, DT_F16, DT_BF16 = 0, 1, 2


def stored_dtypes(path):
    """name -> dtype code, parsed straight from docs/FORMAT.md offsets (not via mixformat)."""
    with open(path, "rb") as f:
        buf = f.read()
    version, n_layers = struct.unpack_from("<I", buf, 8)[0], struct.unpack_from("<I", buf, 20)[0]
    n_tensors = struct.unpack_from("<I", buf, 120)[0]
    d0 = 256 + (64 if version == 1 else 128) * n_layers
    out = {}
    for i in range(n_tensors):
        e = d0 + 128 * i
        name = buf[e:e + 64].split(b"\0", 1)[0].decode()
        out[name] = struct.unpack_from("<I", buf, e + 64)[0]
    return out


def attn(layer):
    """A layer dict without its feed-forward part (and without qk_norm when off)."""
    ffn = ("ffn", "hidden_dim", "n_experts", "top_k", "expert_hidden", "shared_hidden",
           "scoring", "topk_method", "n_group", "topk_group", "norm_topk_prob",
           "routed_scaling_factor")
    return {k: v for k, v in layer.items()
            if k not in ffn and not (k == "qk_norm" and not v)}


def bf16_exact(a):
    """Values exactly representable in bf16 (low 16 bits cleared)."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    return (a.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)


def f16_exact(a):
    return np.asarray(a, dtype=np.float32).astype(np.float16).astype(np.float32)


def spm_bytes(n):
    """A minimal serialized SentencePiece ModelProto with n pieces (wire format by hand)."""
    def ld(field, payload):
        out, v = bytes([field << 3 | 2]), len(payload)
        while v >= 0x80:
            out, v = out + bytes([v & 0x7F | 0x80]), v >> 7
        return out + bytes([v]) + payload
    return b"".join(ld(1, ld(1, ("p%d" % i).encode())) for i in range(n))


class Model:
    """A synthetic HF checkpoint being assembled: config + tensors (float32 arrays)."""

    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)
        self.cfg = {}
        self.t = {}

    def rand(self, *shape):
        # distinct, non-trivial values; not exactly representable in bf16/f16
        return (self.rng.standard_normal(shape) * 0.5 + 0.01).astype(np.float32)

    def common(self, V, D, L, lm_head=True):
        self.t["model.embed_tokens.weight"] = self.rand(V, D)
        self.t["model.norm.weight"] = self.rand(D)
        if lm_head:
            self.t["lm_head.weight"] = self.rand(V, D)

    def ffn(self, n, D, I, bias=False):
        p = "model.layers.%d." % n
        self.t[p + "input_layernorm.weight"] = self.rand(D)
        self.t[p + "post_attention_layernorm.weight"] = self.rand(D)
        self.t[p + "mlp.gate_proj.weight"] = self.rand(I, D)
        self.t[p + "mlp.up_proj.weight"] = self.rand(I, D)
        self.t[p + "mlp.down_proj.weight"] = self.rand(D, I)
        if bias:
            self.t[p + "mlp.gate_proj.bias"] = self.rand(I)
            self.t[p + "mlp.up_proj.bias"] = self.rand(I)
            self.t[p + "mlp.down_proj.bias"] = self.rand(D)


def gqa_model(arch="LlamaForCausalLM", V=37, D=16, L=2, H=4, Hkv=None, d=None, I=24,
              qkv_bias=False, o_bias=False, mlp_bias=False, lm_head=True, seed=0, **cfg):
    m = Model(seed)
    hd = d if d is not None else D // H
    kv = Hkv if Hkv is not None else H
    m.cfg = dict(architectures=[arch], hidden_size=D, num_hidden_layers=L, num_attention_heads=H,
                 intermediate_size=I, vocab_size=V, rms_norm_eps=1e-5, hidden_act="silu",
                 max_position_embeddings=128)
    if Hkv is not None:
        m.cfg["num_key_value_heads"] = Hkv
    if d is not None:
        m.cfg["head_dim"] = d
    m.cfg.update(cfg)
    m.common(V, D, L, lm_head)
    for n in range(L):
        a = "model.layers.%d.self_attn." % n
        m.t[a + "q_proj.weight"] = m.rand(H * hd, D)
        m.t[a + "k_proj.weight"] = m.rand(kv * hd, D)
        m.t[a + "v_proj.weight"] = m.rand(kv * hd, D)
        m.t[a + "o_proj.weight"] = m.rand(D, H * hd)
        if qkv_bias:
            m.t[a + "q_proj.bias"] = m.rand(H * hd)
            m.t[a + "k_proj.bias"] = m.rand(kv * hd)
            m.t[a + "v_proj.bias"] = m.rand(kv * hd)
        if o_bias:
            m.t[a + "o_proj.bias"] = m.rand(D)
        m.ffn(n, D, I, mlp_bias)
    return m


def mla_model(arch="DeepseekV3ForCausalLM", V=41, D=24, L=2, H=3, dq=10, dc=12, dn=6, dr=4,
              dv=5, I=20, bias=False, mtp=False, seed=1, **cfg):
    m = Model(seed)
    m.cfg = dict(architectures=[arch], model_type="deepseek_v3" if "V3" in arch else "deepseek_v2",
                 hidden_size=D, num_hidden_layers=L, num_attention_heads=H, num_key_value_heads=H,
                 intermediate_size=I, vocab_size=V, q_lora_rank=dq or None, kv_lora_rank=dc,
                 qk_nope_head_dim=dn, qk_rope_head_dim=dr, v_head_dim=dv, rms_norm_eps=1e-6,
                 max_position_embeddings=256, first_k_dense_replace=L, n_routed_experts=8,
                 moe_intermediate_size=7, attention_bias=bias, tie_word_embeddings=False,
                 bos_token_id=0, eos_token_id=1)
    m.cfg.update(cfg)
    m.common(V, D, L)
    for n in range(L + (1 if mtp else 0)):
        a = "model.layers.%d.self_attn." % n
        if dq:
            m.t[a + "q_a_proj.weight"] = m.rand(dq, D)
            m.t[a + "q_a_layernorm.weight"] = m.rand(dq)
            m.t[a + "q_b_proj.weight"] = m.rand(H * (dn + dr), dq)
            if bias:
                m.t[a + "q_a_proj.bias"] = m.rand(dq)
        else:
            m.t[a + "q_proj.weight"] = m.rand(H * (dn + dr), D)
        m.t[a + "kv_a_proj_with_mqa.weight"] = m.rand(dc + dr, D)
        m.t[a + "kv_a_layernorm.weight"] = m.rand(dc)
        m.t[a + "kv_b_proj.weight"] = m.rand(H * (dn + dv), dc)
        m.t[a + "o_proj.weight"] = m.rand(D, H * dv)
        if bias:
            m.t[a + "kv_a_proj_with_mqa.bias"] = m.rand(dc + dr)
            m.t[a + "o_proj.bias"] = m.rand(D)
        m.ffn(n, D, I)
        if n == L:  # MTP-style extras only on the extra layer
            m.t["model.layers.%d.enorm.weight" % n] = m.rand(D)
            m.t["model.layers.%d.eh_proj.weight" % n] = m.rand(D, 2 * D)
    return m


class ConvertTestCase(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="test_convert_")
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.n = 0

    # -- helpers -----------------------------------------------------------------------

    def write(self, m, dtypes=None, tokenizer=None, config_text=None, shards=None):
        """Write m into a fresh HF folder and return its path.

        shards: list of lists of tensor names -> sharded with an index.json."""
        self.n += 1
        d = os.path.join(self.tmp, "hf%d" % self.n)
        os.mkdir(d)
        with open(os.path.join(d, "config.json"), "w") as f:
            f.write(config_text if config_text is not None else json.dumps(m.cfg, indent=1))
        if shards is None:
            st.save_file(m.t, os.path.join(d, "model.safetensors"), dtypes=dtypes,
                         metadata={"format": "pt"})
        else:
            wm = {}
            for i, names in enumerate(shards):
                fn = "model-%05d-of-%05d.safetensors" % (i + 1, len(shards))
                st.save_file({k: m.t[k] for k in names}, os.path.join(d, fn), dtypes=dtypes)
                wm.update({k: fn for k in names})
            with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
                json.dump({"metadata": {"total_size": 0}, "weight_map": wm}, f)
        if tokenizer is not None:
            with open(os.path.join(d, "tokenizer.model"), "wb") as f:
                f.write(tokenizer)
        return d

    def run_convert(self, hf_dir, *args):
        out = os.path.join(self.tmp, "out%d.bin" % self.n)
        p = subprocess.run([sys.executable, CONVERT, hf_dir, out] + list(args),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
        return p, out

    def convert_ok(self, m, *args, **write_kw):
        d = self.write(m, **write_kw)
        p, out = self.run_convert(d, *args)
        self.assertEqual(p.returncode, 0, "converter failed: " + p.stderr)
        self.assertNotIn("Traceback", p.stderr)
        cfg, layers, tensors, tok = mixformat.read_model(out)
        return cfg, layers, tensors, tok, out, p

    def assert_fails(self, hf_dir, pattern, *args):
        p, out = self.run_convert(hf_dir, *args)
        self.assertEqual(p.returncode, 1, "expected exit 1, got %d; stderr: %s" % (p.returncode, p.stderr))
        lines = p.stderr.splitlines()
        self.assertEqual(len(lines), 1, "want one line on stderr, got: %r" % p.stderr)
        self.assertTrue(lines[0].startswith("convert_hf: error: "), lines[0])
        self.assertRegex(lines[0], pattern)
        self.assertNotIn("Traceback", p.stderr)
        self.assertFalse(os.path.exists(out), "OUT was created on failure")
        self.assertEqual([f for f in os.listdir(self.tmp) if f.startswith(".tmp-")], [],
                         "a temporary file was left behind")
        return lines[0]

    def assert_same(self, got, want, name=""):
        self.assertEqual(got.shape, want.shape, name)
        self.assertTrue(np.array_equal(got, want), "%s differs (max |diff| %g)"
                        % (name, float(np.max(np.abs(got - want)))))

    def assert_gqa_mapping(self, m, tensors, L, biases=(), mlp_bias=False, tied=False):
        t = m.t
        self.assert_same(tensors["tok_embeddings"], t["model.embed_tokens.weight"], "tok_embeddings")
        self.assert_same(tensors["norm"], t["model.norm.weight"], "norm")
        if tied:
            self.assertNotIn("output", tensors)
        else:
            self.assert_same(tensors["output"], t["lm_head.weight"], "output")
        pairs = [("wq", "self_attn.q_proj.weight"), ("wk", "self_attn.k_proj.weight"),
                 ("wv", "self_attn.v_proj.weight"), ("wo", "self_attn.o_proj.weight"),
                 ("attn_norm", "input_layernorm.weight"),
                 ("ffn_norm", "post_attention_layernorm.weight"),
                 ("w1", "mlp.gate_proj.weight"), ("w3", "mlp.up_proj.weight"),
                 ("w2", "mlp.down_proj.weight")]
        pairs += [("b" + b, "self_attn.%s_proj.bias" % b) for b in biases]
        if mlp_bias:
            pairs += [("b1", "mlp.gate_proj.bias"), ("b3", "mlp.up_proj.bias"),
                      ("b2", "mlp.down_proj.bias")]
        for n in range(L):
            for ours, theirs in pairs:
                self.assert_same(tensors["layers.%d.%s" % (n, ours)],
                                 t["model.layers.%d.%s" % (n, theirs)], "layers.%d.%s" % (n, ours))
        want = 2 + (0 if tied else 1) + L * len(pairs)
        self.assertEqual(len(tensors), want, sorted(tensors))


class TestSafetensors(unittest.TestCase):

    def test_roundtrip_dtypes(self):
        with tempfile.TemporaryDirectory() as d:
            a = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
            path = os.path.join(d, "x.safetensors")
            st.save_file({"a": a, "b": a, "c": a.astype(np.float16), "i": np.arange(3)}, path,
                         dtypes={"b": "BF16"})
            f = st.SafetensorsFile(path)
            self.assertEqual(f.info("a"), ("F32", (3, 4)))
            self.assertEqual(f.info("b"), ("BF16", (3, 4)))
            self.assertEqual(f.info("c"), ("F16", (3, 4)))
            self.assertEqual(f.info("i"), ("I64", (3,)))
            self.assertTrue(np.array_equal(f.get("a"), a))
            self.assertTrue(np.array_equal(f.get("c"), f16_exact(a)))
            self.assertLess(float(np.max(np.abs(f.get("b") - a))), 2 ** -8)
            with open(path, "rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
            self.assertEqual(n % 8, 0)
            with self.assertRaises(st.SafetensorsError):
                f.get("i")

    def test_bf16_rounding_is_nearest_even(self):
        # 1 + 2^-8 is halfway between two bf16 values: rounds to the even one, 1.0
        x = np.array([1 + 2 ** -8, 1 + 3 * 2 ** -8, -2.5, np.inf], dtype=np.float32)
        b = mixformat.to_bf16_bits(x)
        self.assertEqual([int(v) for v in b], [0x3F80, 0x3F82, 0xC020, 0x7F80])
        self.assertTrue(np.array_equal(mixformat.from_bf16_bits(b), [1.0, 1 + 2 ** -6, -2.5, np.inf]))


class TestLlama(ConvertTestCase):

    def test_mha_mapping_and_header(self):
        m = gqa_model(H=4, D=16, L=2, bos_token_id=5, eos_token_id=[7, 8], rope_theta=5e5,
                      tie_word_embeddings=False)
        cfg, layers, tensors, tok, out, p = self.convert_ok(m, tokenizer=spm_bytes(37))
        self.assertEqual(tok, spm_bytes(37))
        self.assertEqual(p.stderr, "")  # no tokenizer warning when tokenizer.model is there
        self.assertEqual((cfg["dim"], cfg["n_layers"], cfg["vocab_size"], cfg["hidden_dim"],
                          cfg["max_seq_len"]), (16, 2, 37, 24, 128))
        self.assertEqual((cfg["bos_id"], cfg["eos_id"]), (5, 7))
        self.assertAlmostEqual(cfg["norm_eps"], 1e-5, places=10)
        self.assertEqual(cfg["rope_theta"], 5e5)
        self.assertEqual(cfg["rope_pairing"], "neox")
        self.assertEqual(cfg["rope_scaling"]["type"], "none")
        self.assertFalse(cfg["tied"])
        self.assertFalse(cfg["mlp_bias"])
        self.assertEqual(cfg["sliding_window"], 0)
        for l in layers:
            self.assertEqual(attn(l), dict(kind="gqa", n_heads=4, n_kv_heads=4, head_dim=4, rope_dim=4,
                                     q_bias=False, k_bias=False, v_bias=False, o_bias=False))
        self.assert_gqa_mapping(m, tensors, 2)
        self.assertEqual(set(stored_dtypes(out).values()), {DT_F32})

    def test_gqa_explicit_head_dim_partial_rope_llama3(self):
        # head_dim 8 != hidden/heads = 4; q_proj outputs H*d = 32 != D
        m = gqa_model(D=16, H=4, Hkv=2, d=8, L=3, partial_rotary_factor=0.5,
                      rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                    "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
                      rope_theta=500000.0)
        cfg, layers, tensors, _, _, p = self.convert_ok(m)
        self.assertIn("warning", p.stderr)
        self.assertIn("-z", p.stderr)
        self.assertEqual(len(p.stderr.splitlines()), 1)
        self.assertEqual(len(layers), 3)
        self.assertEqual(layers[0]["n_heads"], 4)
        self.assertEqual(layers[0]["n_kv_heads"], 2)
        self.assertEqual(layers[0]["head_dim"], 8)
        self.assertEqual(layers[0]["rope_dim"], 4)
        self.assertEqual(tensors["layers.0.wq"].shape, (32, 16))
        self.assertEqual(tensors["layers.0.wk"].shape, (16, 16))
        self.assertEqual(tensors["layers.2.wo"].shape, (16, 32))
        rs = cfg["rope_scaling"]
        self.assertEqual(rs["type"], "llama3")
        self.assertEqual((rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"],
                          rs["original_max_position_embeddings"]), (8.0, 1.0, 4.0, 64))
        self.assertEqual(cfg["rope_theta"], 500000.0)
        self.assert_gqa_mapping(m, tensors, 3)

    def test_mqa_and_rope_parameters_linear(self):
        m = gqa_model(H=4, Hkv=1, rope_parameters={"rope_type": "linear", "factor": 2.0,
                                                   "rope_theta": 12345.0})
        cfg, layers, tensors, _, _, _ = self.convert_ok(m)
        self.assertEqual(layers[0]["n_kv_heads"], 1)
        self.assertEqual(tensors["layers.1.wk"].shape, (4, 16))
        self.assertEqual(cfg["rope_theta"], 12345.0)
        self.assertEqual(cfg["rope_scaling"]["type"], "linear")
        self.assertEqual(cfg["rope_scaling"]["factor"], 2.0)
        self.assert_gqa_mapping(m, tensors, 2)

    def test_old_rope_scaling_type_key(self):
        m = gqa_model(rope_scaling={"type": "linear", "factor": 4.0})
        cfg, _, _, _, _, _ = self.convert_ok(m)
        self.assertEqual(cfg["rope_scaling"]["type"], "linear")
        self.assertEqual(cfg["rope_scaling"]["factor"], 4.0)
        self.assertEqual(cfg["rope_theta"], 10000.0)  # the default

    def test_tied_without_lm_head(self):
        m = gqa_model(lm_head=False, tie_word_embeddings=True)
        cfg, _, tensors, _, _, _ = self.convert_ok(m)
        self.assertTrue(cfg["tied"])
        self.assert_gqa_mapping(m, tensors, 2, tied=True)

    def test_tied_with_lm_head_present(self):
        m = gqa_model(lm_head=True, tie_word_embeddings=True)
        self.assertFalse(np.array_equal(m.t["lm_head.weight"], m.t["model.embed_tokens.weight"]))
        cfg, _, tensors, _, _, _ = self.convert_ok(m)
        self.assertTrue(cfg["tied"])
        self.assert_gqa_mapping(m, tensors, 2, tied=True)

    def test_untied_without_lm_head_is_an_error(self):
        m = gqa_model(lm_head=False, tie_word_embeddings=False)
        self.assert_fails(self.write(m), r"missing tensor lm_head\.weight")

    def test_attention_and_mlp_biases(self):
        m = gqa_model(Hkv=2, qkv_bias=True, o_bias=True, mlp_bias=True, attention_bias=True)
        m.cfg["mlp_bias"] = True
        cfg, layers, tensors, _, out, _ = self.convert_ok(m, "--dtype", "bf16")
        self.assertTrue(cfg["mlp_bias"])
        self.assertEqual({k: layers[0][k] for k in ("q_bias", "k_bias", "v_bias", "o_bias")},
                         dict(q_bias=True, k_bias=True, v_bias=True, o_bias=True))
        # biases are 1-D: kept f32 (exact) even with --dtype bf16
        for n in range(2):
            for b in "qkvo":
                self.assert_same(tensors["layers.%d.b%s" % (n, b)],
                                 m.t["model.layers.%d.self_attn.%s_proj.bias" % (n, b)])
            self.assert_same(tensors["layers.%d.b1" % n], m.t["model.layers.%d.mlp.gate_proj.bias" % n])
            self.assert_same(tensors["layers.%d.b3" % n], m.t["model.layers.%d.mlp.up_proj.bias" % n])
            self.assert_same(tensors["layers.%d.b2" % n], m.t["model.layers.%d.mlp.down_proj.bias" % n])
        dts = stored_dtypes(out)
        self.assertEqual(dts["layers.0.bq"], DT_F32)
        self.assertEqual(dts["layers.1.b2"], DT_F32)
        self.assertEqual(dts["layers.0.wq"], DT_BF16)

    def test_rotary_inv_freq_is_ignored(self):
        m = gqa_model()
        m.t["model.layers.0.self_attn.rotary_emb.inv_freq"] = m.rand(2)
        _, _, tensors, _, _, _ = self.convert_ok(m)
        self.assert_gqa_mapping(m_without(m, "model.layers.0.self_attn.rotary_emb.inv_freq"),
                                tensors, 2)

    def test_model_type_without_architectures(self):
        m = gqa_model()
        del m.cfg["architectures"]
        m.cfg["model_type"] = "llama"
        _, _, tensors, _, _, _ = self.convert_ok(m)
        self.assert_gqa_mapping(m, tensors, 2)


def m_without(m, name):
    c = Model()
    c.cfg = dict(m.cfg)
    c.t = {k: v for k, v in m.t.items() if k != name}
    return c


class TestQwen2Mistral(ConvertTestCase):

    def test_qwen2_biases(self):
        m = gqa_model("Qwen2ForCausalLM", H=4, Hkv=2, qkv_bias=True, lm_head=False,
                      tie_word_embeddings=True, bos_token_id=None, eos_token_id=[9, 3],
                      use_sliding_window=False, sliding_window=4, max_window_layers=1,
                      rope_theta=1e6, model_type="qwen2")
        cfg, layers, tensors, _, _, _ = self.convert_ok(m)
        self.assertEqual((cfg["bos_id"], cfg["eos_id"]), (-1, 9))
        self.assertEqual(cfg["sliding_window"], 0)
        self.assertTrue(cfg["tied"])
        self.assertEqual(cfg["rope_theta"], 1e6)
        self.assertEqual({k: layers[1][k] for k in ("q_bias", "k_bias", "v_bias", "o_bias")},
                         dict(q_bias=True, k_bias=True, v_bias=True, o_bias=False))
        self.assert_gqa_mapping(m, tensors, 2, biases="qkv", tied=True)
        self.assertNotIn("layers.0.bo", tensors)

    def test_qwen2_missing_bias_is_an_error(self):
        m = gqa_model("Qwen2ForCausalLM", qkv_bias=True)
        del m.t["model.layers.1.self_attn.v_proj.bias"]
        self.assert_fails(self.write(m), r"missing tensor model\.layers\.1\.self_attn\.v_proj\.bias")

    def test_qwen2_uniform_sliding_window(self):
        m = gqa_model("Qwen2ForCausalLM", qkv_bias=True, use_sliding_window=True, sliding_window=16,
                      max_window_layers=0)
        cfg, _, _, _, _, _ = self.convert_ok(m)
        self.assertEqual(cfg["sliding_window"], 16)

    def test_qwen2_mixed_sliding_window_refused(self):
        m = gqa_model("Qwen2ForCausalLM", qkv_bias=True, use_sliding_window=True, sliding_window=16,
                      max_window_layers=1)
        self.assert_fails(self.write(m), r"sliding")

    def test_mistral_sliding_window(self):
        m = gqa_model("MistralForCausalLM", H=4, Hkv=2, sliding_window=8)
        cfg, layers, tensors, _, _, _ = self.convert_ok(m)
        self.assertEqual(cfg["sliding_window"], 8)
        self.assertEqual(cfg["rope_pairing"], "neox")
        self.assert_gqa_mapping(m, tensors, 2)

    def test_mistral_null_window(self):
        m = gqa_model("MistralForCausalLM", sliding_window=None, rope_theta=1e6)
        cfg, _, _, _, _, _ = self.convert_ok(m)
        self.assertEqual(cfg["sliding_window"], 0)


class TestDeepSeek(ConvertTestCase):

    def check_mla(self, m, tensors, L, H, dq, dn, dv, bias=False):
        t = m.t
        self.assert_same(tensors["tok_embeddings"], t["model.embed_tokens.weight"])
        self.assert_same(tensors["norm"], t["model.norm.weight"])
        self.assert_same(tensors["output"], t["lm_head.weight"])
        for n in range(L):
            a, p = "model.layers.%d.self_attn." % n, "layers.%d." % n
            if dq:
                self.assert_same(tensors[p + "wq_a"], t[a + "q_a_proj.weight"], p + "wq_a")
                self.assert_same(tensors[p + "q_a_norm"], t[a + "q_a_layernorm.weight"])
                self.assert_same(tensors[p + "wq_b"], t[a + "q_b_proj.weight"])
                self.assertNotIn(p + "wq", tensors)
            else:
                self.assert_same(tensors[p + "wq"], t[a + "q_proj.weight"])
                self.assertNotIn(p + "wq_a", tensors)
            self.assert_same(tensors[p + "wkv_a"], t[a + "kv_a_proj_with_mqa.weight"])
            self.assert_same(tensors[p + "kv_a_norm"], t[a + "kv_a_layernorm.weight"])
            self.assert_same(tensors[p + "wo"], t[a + "o_proj.weight"])
            kvb = t[a + "kv_b_proj.weight"]
            for h in range(H):  # head h's rows: [h*(dn+dv), +dn) keys, then dv values
                base = h * (dn + dv)
                self.assert_same(tensors[p + "w_uk"][h], kvb[base:base + dn], "w_uk head %d" % h)
                self.assert_same(tensors[p + "w_uv"][h], kvb[base + dn:base + dn + dv],
                                 "w_uv head %d" % h)
            if bias:
                if dq:
                    self.assert_same(tensors[p + "bq_a"], t[a + "q_a_proj.bias"])
                self.assert_same(tensors[p + "bkv_a"], t[a + "kv_a_proj_with_mqa.bias"])
                self.assert_same(tensors[p + "bo"], t[a + "o_proj.bias"])
            for ours, theirs in (("attn_norm", "input_layernorm.weight"),
                                 ("ffn_norm", "post_attention_layernorm.weight"),
                                 ("w1", "mlp.gate_proj.weight"), ("w3", "mlp.up_proj.weight"),
                                 ("w2", "mlp.down_proj.weight")):
                self.assert_same(tensors[p + ours], t["model.layers.%d.%s" % (n, theirs)])

    def test_v2_no_q_lora_yarn_old_form(self):
        m = mla_model("DeepseekV2ForCausalLM", H=3, dq=0, dc=12, dn=6, dr=4, dv=5, L=2,
                      first_k_dense_replace=5, n_routed_experts=8, max_position_embeddings=163840,
                      rope_theta=10000,
                      rope_scaling={"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
                                    "beta_fast": 32, "beta_slow": 1, "mscale": 0.707,
                                    "mscale_all_dim": 0.707})
        cfg, layers, tensors, _, _, _ = self.convert_ok(m)
        self.assertEqual(attn(layers[0]), dict(kind="mla", n_heads=3, q_lora_rank=0, kv_lora_rank=12,
                                         qk_nope_head_dim=6, qk_rope_head_dim=4, v_head_dim=5,
                                         q_bias=False, kv_bias=False, o_bias=False))
        self.assertEqual(cfg["rope_pairing"], "interleaved")
        self.assertEqual(cfg["max_seq_len"], 163840)
        self.assertEqual((cfg["bos_id"], cfg["eos_id"]), (0, 1))
        rs = cfg["rope_scaling"]
        self.assertEqual(rs["type"], "yarn")
        self.assertEqual((rs["factor"], rs["original_max_position_embeddings"], rs["beta_fast"],
                          rs["beta_slow"]), (40.0, 4096, 32.0, 1.0))
        self.assertAlmostEqual(rs["mscale"], 0.707, places=6)
        self.assertAlmostEqual(rs["mscale_all_dim"], 0.707, places=6)
        self.assertEqual(rs["attention_factor"], 0.0)
        self.assertEqual(tensors["layers.0.w_uk"].shape, (3, 6, 12))
        self.assertEqual(tensors["layers.0.w_uv"].shape, (3, 5, 12))
        self.check_mla(m, tensors, 2, 3, 0, 6, 5)
        self.assertEqual(len(tensors), 3 + 2 * 11)

    def test_v3_q_lora_yarn_new_form_bias_mtp(self):
        m = mla_model("DeepseekV3ForCausalLM", H=2, dq=10, dc=8, dn=4, dr=6, dv=3, L=2, bias=True,
                      mtp=True, n_routed_experts=None, first_k_dense_replace=0,
                      max_position_embeddings=1024,
                      rope_parameters={"rope_type": "yarn", "rope_theta": 50000.0, "factor": None,
                                       "original_max_position_embeddings": 256, "mscale": 1.0,
                                       "mscale_all_dim": 1.0, "beta_fast": 16})
        cfg, layers, tensors, _, _, _ = self.convert_ok(m)
        self.assertEqual(attn(layers[1]), dict(kind="mla", n_heads=2, q_lora_rank=10, kv_lora_rank=8,
                                         qk_nope_head_dim=4, qk_rope_head_dim=6, v_head_dim=3,
                                         q_bias=True, kv_bias=True, o_bias=True))
        self.assertEqual(cfg["rope_pairing"], "interleaved")
        self.assertEqual(cfg["rope_theta"], 50000.0)
        rs = cfg["rope_scaling"]
        self.assertEqual(rs["type"], "yarn")
        self.assertEqual(rs["factor"], 4.0)  # null factor -> max_pos / original
        self.assertEqual((rs["beta_fast"], rs["beta_slow"], rs["mscale"], rs["mscale_all_dim"]),
                         (16.0, 1.0, 1.0, 1.0))
        self.check_mla(m, tensors, 2, 2, 10, 4, 3, bias=True)
        self.assertFalse(any(k.startswith("layers.2.") for k in tensors))  # MTP layer ignored

    def test_v3_rope_interleave_false_is_neox(self):
        m = mla_model(rope_interleave=False)
        cfg, _, tensors, _, _, _ = self.convert_ok(m)
        self.assertEqual(cfg["rope_pairing"], "neox")
        self.check_mla(m, tensors, 2, 3, 10, 6, 5)

    def test_moe_layer_freq_refused(self):
        # transformers ignores moe_layer_freq, DeepSeek's code does not: refuse, not guess
        m = mla_model(L=2, first_k_dense_replace=1, n_routed_experts=4, moe_layer_freq=2)
        self.assert_fails(self.write(m), r"moe_layer_freq 2 is not supported")

    def test_moe_default_experts_need_top_k(self):
        m = mla_model("DeepseekV2ForCausalLM", dq=0, L=2)
        del m.cfg["first_k_dense_replace"]
        del m.cfg["n_routed_experts"]   # V2 class defaults: 64 experts from layer 0
        self.assert_fails(self.write(m), r"lacks num_experts_per_tok")


def add_experts(m, n, D, E, Ie, Ns=0, mod="mlp", names=("gate_proj", "up_proj", "down_proj"),
                bias=False):
    """Hub-named router, experts and shared expert of MoE layer n; replaces the dense MLP."""
    p = "model.layers.%d." % n
    for k in [k for k in m.t if k.startswith(p + "mlp.")]:
        del m.t[k]
    q = p + mod + "."
    m.t[q + "gate.weight"] = m.rand(E, D)
    if bias:
        m.t[q + "gate.e_score_correction_bias"] = m.rand(E)
    for e in range(E):
        m.t[q + "experts.%d.%s.weight" % (e, names[0])] = m.rand(Ie, D)
        m.t[q + "experts.%d.%s.weight" % (e, names[1])] = m.rand(Ie, D)
        m.t[q + "experts.%d.%s.weight" % (e, names[2])] = m.rand(D, Ie)
    if Ns:
        for w, shape in (("gate_proj", (Ns * Ie, D)), ("up_proj", (Ns * Ie, D)),
                         ("down_proj", (D, Ns * Ie))):
            m.t[q + "shared_experts.%s.weight" % w] = m.rand(*shape)


def ds_moe_model(arch="DeepseekV3ForCausalLM", L=3, E=8, K=3, Ie=5, Ns=2, fkd=1, **cfg):
    kw = dict(first_k_dense_replace=fkd, n_routed_experts=E, num_experts_per_tok=K,
              moe_intermediate_size=Ie, n_shared_experts=Ns)
    if "V3" in arch:
        kw.update(n_group=4, topk_group=2)
    kw.update(cfg)
    m = mla_model(arch, L=L, **kw)
    D = m.cfg["hidden_size"]
    for n in range(fkd, L):
        add_experts(m, n, D, E, Ie, Ns, bias="V3" in arch)
    return m


class TestMoE(ConvertTestCase):

    def check_moe(self, m, tensors, n, E, Ie, Is, mod="mlp", names=("gate_proj", "up_proj",
                                                                       "down_proj"), bias=False):
        q = "model.layers.%d.%s." % (n, mod)
        p = "layers.%d." % n
        self.assert_same(tensors[p + "router"], m.t[q + "gate.weight"], "router")
        for ours, theirs in zip(("w1", "w3", "w2"), names):
            got = tensors[p + "experts." + ours]
            self.assertEqual(got.shape[0], E)
            for e in range(E):
                self.assert_same(got[e], m.t[q + "experts.%d.%s.weight" % (e, theirs)],
                                 "%s expert %d" % (ours, e))
        if bias:
            self.assert_same(tensors[p + "router_bias"], m.t[q + "gate.e_score_correction_bias"])
        else:
            self.assertNotIn(p + "router_bias", tensors)
        if Is:
            for ours, theirs in (("w1", "gate_proj"), ("w3", "up_proj"), ("w2", "down_proj")):
                self.assert_same(tensors[p + "shared." + ours],
                                 m.t[q + "shared_experts.%s.weight" % theirs], "shared " + ours)
        else:
            self.assertNotIn(p + "shared.w1", tensors)
        for w in ("w1", "w2", "w3"):
            self.assertNotIn(p + w, tensors)

    def test_v2_lite_layout(self):
        # plain q_proj, first layer dense (width 20), experts of width 5, 2 shared
        m = ds_moe_model("DeepseekV2ForCausalLM", dq=0, E=8, K=6, Ie=5, Ns=2,
                         routed_scaling_factor=1.0)
        cfg, layers, tensors, _, out, _ = self.convert_ok(m)
        self.assertEqual(layers[0]["ffn"], "dense")
        self.assertEqual(layers[0]["hidden_dim"], 20)
        for n in (1, 2):
            l = layers[n]
            self.assertEqual((l["ffn"], l["n_experts"], l["top_k"], l["expert_hidden"],
                              l["shared_hidden"], l["scoring"], l["topk_method"], l["n_group"],
                              l["topk_group"], l["norm_topk_prob"], l["routed_scaling_factor"]),
                             ("moe", 8, 6, 5, 10, "softmax", "greedy", 1, 1, False, 1.0))
            self.check_moe(m, tensors, n, 8, 5, 10)
        self.assertEqual(cfg["hidden_dim"], 20)  # the widest FFN of any layer

    def test_v2_group_limited(self):
        m = ds_moe_model("DeepseekV2ForCausalLM", topk_method="group_limited_greedy", n_group=4,
                         topk_group=2, routed_scaling_factor=16.0, norm_topk_prob=True)
        _, layers, tensors, _, _, _ = self.convert_ok(m)
        l = layers[1]
        self.assertEqual((l["topk_method"], l["n_group"], l["topk_group"],
                          l["routed_scaling_factor"]), ("group_limited_greedy", 4, 2, 16.0))
        self.assertFalse(l["norm_topk_prob"])  # transformers' V2 router never normalises

    def test_v3_noaux_bias_mtp_and_router_f32(self):
        m = ds_moe_model(L=2, mtp=True, norm_topk_prob=True, routed_scaling_factor=2.5)
        add_experts(m, 2, 24, 8, 5, 2, bias=True)  # the MTP layer has experts too
        cfg, layers, tensors, _, out, _ = self.convert_ok(m, "--dtype", "bf16")
        l = layers[1]
        self.assertEqual((l["scoring"], l["topk_method"], l["n_group"], l["topk_group"],
                          l["norm_topk_prob"], l["routed_scaling_factor"]),
                         ("sigmoid", "noaux_tc", 4, 2, True, 2.5))
        dts = stored_dtypes(out)
        self.assertEqual((dts["layers.1.router"], dts["layers.1.router_bias"]), (DT_F32, DT_F32))
        self.assertEqual(dts["layers.1.experts.w1"], DT_BF16)
        self.assertFalse(any(k.startswith("layers.2.") for k in tensors))

    def test_mixtral_sharded(self):
        m = gqa_model("MixtralForCausalLM", D=16, L=2, H=4, Hkv=2, I=6, num_local_experts=4,
                      num_experts_per_tok=2)
        for n in range(2):
            add_experts(m, n, 16, 4, 6, mod="block_sparse_moe", names=("w1", "w3", "w2"))
        names = sorted(m.t)
        _, layers, tensors, _, _, _ = self.convert_ok(m, shards=[names[::3], names[1::3],
                                                                 names[2::3]])
        for n in range(2):
            l = layers[n]
            self.assertEqual((l["ffn"], l["n_experts"], l["top_k"], l["norm_topk_prob"],
                              l["scoring"], l["topk_method"]),
                             ("moe", 4, 2, True, "softmax", "greedy"))
            self.check_moe(m, tensors, n, 4, 6, 0, mod="block_sparse_moe",
                           names=("w1", "w3", "w2"))

    def test_qwen3_moe_layer_choice_and_qk_norm(self):
        # MoE iff not in mlp_only_layers and (l + 1) % decoder_sparse_step == 0
        m = gqa_model("Qwen3MoeForCausalLM", D=16, L=4, H=4, Hkv=2, d=6, I=10, num_experts=4,
                      num_experts_per_tok=2, moe_intermediate_size=3, decoder_sparse_step=2,
                      mlp_only_layers=[3], norm_topk_prob=False)
        add_experts(m, 1, 16, 4, 3)
        for n in range(4):
            a = "model.layers.%d.self_attn." % n
            m.t[a + "q_norm.weight"] = m.rand(6)
            m.t[a + "k_norm.weight"] = m.rand(6)
        _, layers, tensors, _, _, _ = self.convert_ok(m)
        self.assertEqual([l["ffn"] for l in layers], ["dense", "moe", "dense", "dense"])
        self.assertFalse(layers[1]["norm_topk_prob"])
        self.check_moe(m, tensors, 1, 4, 3, 0)
        for n in range(4):
            self.assertTrue(layers[n]["qk_norm"])
            a = "model.layers.%d.self_attn." % n
            self.assert_same(tensors["layers.%d.q_norm" % n], m.t[a + "q_norm.weight"])
            self.assert_same(tensors["layers.%d.k_norm" % n], m.t[a + "k_norm.weight"])

    # -- bad input: one line, exit 1, no output file ------------------------------------

    def test_expert_missing(self):
        m = ds_moe_model()
        del m.t["model.layers.2.mlp.experts.5.up_proj.weight"]
        self.assert_fails(self.write(m), r"missing tensor model\.layers\.2\.mlp\.experts\.5\."
                          r"up_proj\.weight \(needed for layers\.2\.experts\.w3\)")

    def test_expert_misshapen(self):
        m = ds_moe_model()
        m.t["model.layers.1.mlp.experts.0.down_proj.weight"] = m.rand(5, 24)
        self.assert_fails(self.write(m), r"experts\.0\.down_proj\.weight has shape \[5, 24\]")

    def test_top_k_above_experts(self):
        self.assert_fails(self.write(ds_moe_model(K=9, n_group=1, topk_group=1)),
                          r"num_experts_per_tok 9 > the number of experts 8")

    def test_experts_not_divisible_by_groups(self):
        self.assert_fails(self.write(ds_moe_model(n_group=3, topk_group=2)),
                          r"not divisible by n_group 3")

    def test_unknown_routing_method(self):
        self.assert_fails(self.write(ds_moe_model("DeepseekV2ForCausalLM",
                                                  topk_method="random_topk")),
                          r"unknown routing method topk_method='random_topk'")
        self.assert_fails(self.write(ds_moe_model(topk_method="greedy")),
                          r"unknown routing method topk_method='greedy'")

    def test_unknown_scoring(self):
        self.assert_fails(self.write(ds_moe_model("DeepseekV2ForCausalLM",
                                                  scoring_func="sigmoid")),
                          r"scoring_func 'sigmoid' is not supported")


def fp8_model(block=(4, 4)):
    """A V3 MoE checkpoint whose matrices are fp8 e4m3 with block scales (edge blocks
    partial: 24 = 6 blocks of 4 rows, 5 and 10 and 22 are not multiples of 4)."""
    m = ds_moe_model(L=2, mtp=True)
    add_experts(m, 2, 24, 8, 5, 2, bias=True)
    m.cfg["quantization_config"] = dict(quant_method="fp8", fmt="e4m3",
                                        activation_scheme="dynamic", weight_block_size=list(block))
    m.cfg["num_nextn_predict_layers"] = 1
    dtypes, raw = {}, {}
    for k in list(m.t):
        if k.endswith("proj.weight") or k.endswith("proj_with_mqa.weight"):
            R, C = m.t[k].shape
            bits = m.rng.integers(0, 256, size=(R, C), dtype=np.uint8)
            bits[(bits & 0x7F) == 0x7F] = 0x3C  # no NaN patterns
            m.t[k] = bits
            dtypes[k] = "F8_E4M3"
            nr, nc = -(-R // block[0]), -(-C // block[1])
            m.t[k + "_scale_inv"] = (m.rng.random((nr, nc)) * 0.01 + 1e-3).astype(np.float32)
            raw[k] = bits
    return m, dtypes, raw


def e4m3_value(b):
    """One float8_e4m3fn byte, decoded from the bit fields (independently of the table)."""
    sign = -1.0 if b & 0x80 else 1.0
    e, f = (b >> 3) & 15, b & 7
    return sign * (f / 8.0 * 2.0 ** -6 if e == 0 else (1 + f / 8.0) * 2.0 ** (e - 7))


class TestFp8(ConvertTestCase):

    def test_exact_dequantization_partial_blocks(self):
        m, dtypes, raw = fp8_model(block=(4, 4))
        _, layers, tensors, _, _, _ = self.convert_ok(m, dtypes=dtypes)
        lut = np.array([e4m3_value(b) for b in range(256)], dtype=np.float32)
        checked = 0
        for src, dst, pick in (
                ("model.layers.1.mlp.experts.3.down_proj.weight", "layers.1.experts.w2", 3),
                ("model.layers.0.self_attn.q_b_proj.weight", "layers.0.wq_b", None),
                ("model.layers.1.mlp.shared_experts.gate_proj.weight", "layers.1.shared.w1", None)):
            bits, s = raw[src], m.t[src + "_scale_inv"]
            want = np.empty(bits.shape, dtype=np.float32)
            for i in range(bits.shape[0]):
                for j in range(bits.shape[1]):
                    want[i, j] = np.float32(lut[bits[i, j]]) * s[i // 4, j // 4]
            got = tensors[dst] if pick is None else tensors[dst][pick]
            self.assert_same(got, want, dst)
            checked += 1
        self.assertEqual(checked, 3)
        self.assertFalse(any(k.startswith("layers.2.") for k in tensors))

    def test_fp8_without_scale(self):
        m, dtypes, _ = fp8_model()
        del m.t["model.layers.1.mlp.experts.2.gate_proj.weight_scale_inv"]
        self.assert_fails(self.write(m, dtypes=dtypes), r"fp8 tensor model\.layers\.1\.mlp\."
                          r"experts\.2\.gate_proj\.weight has no scale")

    def test_fp8_scale_wrong_shape(self):
        m, dtypes, _ = fp8_model()
        k = "model.layers.0.self_attn.kv_b_proj.weight_scale_inv"
        m.t[k] = np.ones((m.t[k].shape[0] + 1, m.t[k].shape[1]), dtype=np.float32)
        self.assert_fails(self.write(m, dtypes=dtypes), r"scale .*kv_b_proj\.weight_scale_inv "
                          r"has shape")

    def test_fp8_without_quantization_config(self):
        m, dtypes, _ = fp8_model()
        del m.cfg["quantization_config"]
        self.assert_fails(self.write(m, dtypes=dtypes), r"is fp8 but config\.json has no fp8 "
                          r"quantization_config")

    def test_unknown_quantization(self):
        m, dtypes, _ = fp8_model()
        m.cfg["quantization_config"]["quant_method"] = "gptq"
        self.assert_fails(self.write(m, dtypes=dtypes), r"quant_method 'gptq' is not supported")


class TestStorage(ConvertTestCase):

    def test_sharded_index(self):
        m = gqa_model(Hkv=2, L=2)
        names = sorted(m.t)
        cfg, layers, tensors, _, _, _ = self.convert_ok(m, shards=[names[::2], names[1::2]])
        self.assert_gqa_mapping(m, tensors, 2)

    def test_bf16_f16_inputs_and_bf16_output(self):
        m = gqa_model(Hkv=2)
        bf = [k for k in sorted(m.t)][::2]
        for k in m.t:
            m.t[k] = bf16_exact(m.t[k]) if k in bf else f16_exact(m.t[k])
        dtypes = {k: ("BF16" if k in bf else "F16") for k in m.t}
        cfg, layers, tensors, _, out, _ = self.convert_ok(m, "--dtype", "bf16", dtypes=dtypes)
        # the f16-exact values are not all bf16-exact: matrices are rounded, 1-D stay exact
        dts = stored_dtypes(out)
        for name, a in tensors.items():
            if a.ndim == 1:
                self.assertEqual(dts[name], DT_F32, name)
            else:
                self.assertEqual(dts[name], DT_BF16, name)
        self.assert_same(tensors["norm"], m.t["model.norm.weight"])
        self.assert_same(tensors["layers.1.attn_norm"], m.t["model.layers.1.input_layernorm.weight"])
        for ours, theirs in (("tok_embeddings", "model.embed_tokens.weight"),
                             ("output", "lm_head.weight"),
                             ("layers.0.wq", "model.layers.0.self_attn.q_proj.weight"),
                             ("layers.1.w2", "model.layers.1.mlp.down_proj.weight")):
            want = m.t[theirs]
            if theirs in bf:
                self.assert_same(tensors[ours], want, ours)
            else:
                self.assertLessEqual(float(np.max(np.abs(tensors[ours] - want) /
                                                  np.maximum(np.abs(want), 1e-30))), 2 ** -8, ours)

    def test_bf16_input_f32_output_exact(self):
        m = gqa_model()
        for k in m.t:
            m.t[k] = bf16_exact(m.t[k])
        _, _, tensors, _, out, _ = self.convert_ok(m, dtypes={k: "BF16" for k in m.t})
        self.assertEqual(set(stored_dtypes(out).values()), {DT_F32})
        self.assert_gqa_mapping(m, tensors, 2)

    def test_f16_output(self):
        m = gqa_model()
        for k in m.t:
            m.t[k] = f16_exact(m.t[k])
        _, _, tensors, _, out, _ = self.convert_ok(m, "--dtype", "f16")
        dts = stored_dtypes(out)
        self.assertEqual(dts["layers.0.wv"], DT_F16)
        self.assertEqual(dts["layers.0.ffn_norm"], DT_F32)
        self.assert_gqa_mapping(m, tensors, 2)


class TestErrors(ConvertTestCase):

    def test_missing_config(self):
        d = self.write(gqa_model())
        os.unlink(os.path.join(d, "config.json"))
        self.assert_fails(d, r"no config\.json")

    def test_bad_json(self):
        d = self.write(gqa_model(), config_text='{"architectures": ["LlamaForCausalLM"], ')
        self.assert_fails(d, r"config\.json is not valid JSON")

    def test_unsupported_architecture(self):
        m = gqa_model("GPT2LMHeadModel")
        self.assert_fails(self.write(m), r"unsupported architecture 'GPT2LMHeadModel'")

    def test_unknown_rope_type(self):
        m = gqa_model(rope_scaling={"type": "dynamic", "factor": 2.0})
        self.assert_fails(self.write(m), r"unsupported rope type 'dynamic'")
        m = gqa_model(rope_parameters={"rope_type": "longrope", "rope_theta": 1e4,
                                       "short_factor": [1, 1], "long_factor": [2, 2]})
        self.assert_fails(self.write(m), r"unsupported rope type 'longrope'")

    def test_llama3_without_original_max_pos(self):
        m = gqa_model(rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                    "high_freq_factor": 4.0})
        self.assert_fails(self.write(m), r"original_max_position_embeddings")

    def test_missing_tensor(self):
        m = gqa_model()
        del m.t["model.layers.1.mlp.up_proj.weight"]
        self.assert_fails(self.write(m), r"missing tensor model\.layers\.1\.mlp\.up_proj\.weight")

    def test_missing_mla_tensor(self):
        m = mla_model()
        del m.t["model.layers.0.self_attn.kv_b_proj.weight"]
        self.assert_fails(self.write(m), r"missing tensor model\.layers\.0\.self_attn\.kv_b_proj")

    def test_wrong_shape(self):
        m = gqa_model(H=4, Hkv=2)
        m.t["model.layers.0.self_attn.k_proj.weight"] = m.rand(16, 16)  # MHA-shaped k
        msg = self.assert_fails(self.write(m), r"model\.layers\.0\.self_attn\.k_proj\.weight has shape")
        self.assertIn("[16, 16]", msg)
        self.assertIn("[8, 16]", msg)

    def test_wrong_vocab(self):
        m = gqa_model(V=37)
        m.cfg["vocab_size"] = 40
        self.assert_fails(self.write(m), r"model\.embed_tokens\.weight has shape \[37, 16\]")

    def test_unexpected_tensor(self):
        m = gqa_model()  # attention_bias false, yet a bias is in the file
        m.t["model.layers.0.self_attn.q_proj.bias"] = m.rand(16)
        self.assert_fails(self.write(m), r"unexpected tensor model\.layers\.0\.self_attn\.q_proj\.bias")

    def test_unsupported_dtype(self):
        m = gqa_model()
        m.t["model.norm.weight"] = m.t["model.norm.weight"].astype(np.float64)
        self.assert_fails(self.write(m), r"model\.norm\.weight has dtype F64")
        m = gqa_model()
        m.t["model.layers.0.mlp.down_proj.weight"] = np.ones((16, 24), dtype=np.int8)
        self.assert_fails(self.write(m), r"down_proj\.weight has dtype I8")

    def test_truncated_safetensors(self):
        d = self.write(gqa_model())
        path = os.path.join(d, "model.safetensors")
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            f.truncate(size - 10)
        self.assert_fails(d, r"truncated")

    def test_truncated_safetensors_header(self):
        d = self.write(gqa_model())
        path = os.path.join(d, "model.safetensors")
        with open(path, "r+b") as f:
            f.truncate(100)
        self.assert_fails(d, r"truncated")
        with open(path, "r+b") as f:
            f.truncate(5)
        self.assert_fails(d, r"truncated")

    def test_garbage_safetensors_header(self):
        d = self.write(gqa_model())
        with open(os.path.join(d, "model.safetensors"), "wb") as f:
            f.write(struct.pack("<Q", 4) + b"{{{{" + b"\0" * 16)
        self.assert_fails(d, r"not valid JSON")

    def test_no_weights(self):
        d = self.write(gqa_model())
        os.unlink(os.path.join(d, "model.safetensors"))
        self.assert_fails(d, r"no model\.safetensors")

    def test_missing_shard(self):
        m = gqa_model()
        names = sorted(m.t)
        d = self.write(m, shards=[names[:5], names[5:]])
        os.unlink(os.path.join(d, "model-00002-of-00002.safetensors"))
        self.assert_fails(d, r"shard model-00002-of-00002\.safetensors .* is missing")

    def test_bad_output_dir(self):
        d = self.write(gqa_model())
        p = subprocess.run([sys.executable, CONVERT, d, os.path.join(self.tmp, "nope", "x.bin")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
        self.assertEqual(p.returncode, 1)
        self.assertRegex(p.stderr, r"^convert_hf: error: output directory .* does not exist\n$")

    def test_odd_rotary_width(self):
        m = gqa_model(D=16, H=4, partial_rotary_factor=0.25)  # int(4 * 0.25) = 1
        self.assert_fails(self.write(m), r"rotary width")

    def test_unsupported_activation(self):
        m = gqa_model(hidden_act="gelu")
        self.assert_fails(self.write(m), r"hidden_act 'gelu'")

    def test_head_count_mismatch(self):
        m = gqa_model(H=4, Hkv=3)
        self.assert_fails(self.write(m), r"not a multiple of num_key_value_heads")

    def test_f16_overflow(self):
        m = gqa_model()
        m.t["model.layers.0.mlp.gate_proj.weight"][0, 0] = 1e6
        msg = self.assert_fails(self.write(m), r"mlp\.gate_proj\.weight", "--dtype", "f16")
        self.assertIn("f16 range", msg)

    def test_nonfinite_weight_refused(self):
        for bad in (np.nan, np.inf, -np.inf):
            m = gqa_model()
            m.t["model.layers.1.self_attn.v_proj.weight"][2, 3] = bad
            msg = self.assert_fails(self.write(m), r"tensor model\.layers\.1\.self_attn\.v_proj"
                                    r"\.weight holds 1 non-finite values")
            self.assertIn("first at [2, 3]", msg)
        m = gqa_model()
        m.t["model.norm.weight"][0] = np.nan  # bf16 input too
        self.assert_fails(self.write(m, dtypes={"model.norm.weight": "BF16"}),
                          r"model\.norm\.weight holds 1 non-finite")

    def test_overlapping_safetensors_offsets_refused(self):
        m = gqa_model()
        d = self.write(m)
        path = os.path.join(d, "model.safetensors")
        with open(path, "rb") as f:
            raw = f.read()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n])
        # point the up projection at the gate projection's bytes (same size)
        header["model.layers.0.mlp.up_proj.weight"]["data_offsets"] = \
            header["model.layers.0.mlp.gate_proj.weight"]["data_offsets"]
        h = json.dumps(header).encode()
        h += b" " * (-len(h) % 8)
        with open(path, "wb") as f:
            f.write(struct.pack("<Q", len(h)) + h + raw[8 + n:])
        self.assert_fails(d, r"tensors .*gate_proj\.weight .* and .*up_proj\.weight .* overlap")
        # partial overlap, by one element
        header = json.loads(raw[8:8 + n])
        b, e = header["model.layers.0.mlp.gate_proj.weight"]["data_offsets"]
        header["model.layers.0.mlp.gate_proj.weight"]["data_offsets"] = [b + 4, e + 4]
        h = json.dumps(header).encode()
        h += b" " * (-len(h) % 8)
        with open(path, "wb") as f:
            f.write(struct.pack("<Q", len(h)) + h + raw[8 + n:])
        self.assert_fails(d, r"overlap")

    def test_bos_eos_outside_vocab_refused(self):
        self.assert_fails(self.write(gqa_model(V=37, bos_token_id=37)),
                          r"bos_token_id 37 is outside the vocabulary \(vocab_size 37\)")
        self.assert_fails(self.write(gqa_model(V=37, eos_token_id=[40, 2])),
                          r"eos_token_id 40 is outside the vocabulary")

    def test_max_position_embeddings_above_runtime_limit(self):
        m = gqa_model(max_position_embeddings=(1 << 24) + 1)
        self.assert_fails(self.write(m), r"max_position_embeddings 16777217 is above what the "
                          r"runtime accepts \(16777216\)")

    def test_bad_tokenizer_model_refused(self):
        for data in (b"", b"\xff\xff\xff", b"\x0a\x05ab", b"not a protobuf at all"):
            d = self.write(gqa_model(), tokenizer=data)
            self.assert_fails(d, r"tokenizer\.model is not a SentencePiece model")

    def test_tokenizer_vocab_mismatch_refused(self):
        d = self.write(gqa_model(V=37), tokenizer=spm_bytes(36))
        self.assert_fails(d, r"tokenizer\.model has 36 pieces but config\.json's vocab_size is 37")

    def test_real_tokenizer_model_accepted(self):
        tok_path = os.path.join(ROOT, "tests", "fixtures", "tiny_spm128.model")
        with open(tok_path, "rb") as f:
            data = f.read()
        _, _, _, tok, _, _ = self.convert_ok(gqa_model(V=128), tokenizer=data)
        self.assertEqual(tok, data)

    def test_sigterm_removes_partial_output(self):
        import signal
        import time
        m = gqa_model(V=20000, D=256, H=4, I=256, L=2)
        d = self.write(m)
        out = os.path.join(self.tmp, "sig.bin")
        for sig in (signal.SIGTERM, signal.SIGINT):
            # a 40 MB model, so the signal lands while the temporary file is written
            p = subprocess.Popen([sys.executable, CONVERT, d, out], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, universal_newlines=True)
            deadline = time.time() + 60
            while time.time() < deadline and p.poll() is None:
                if any(f.startswith(".tmp-") for f in os.listdir(self.tmp)):
                    break
                time.sleep(0.002)
            if p.poll() is not None:
                self.skipTest("conversion finished before the signal could be sent")
            p.send_signal(sig)
            _, err = p.communicate(timeout=60)
            self.assertEqual(p.returncode, 128 + sig if sig == signal.SIGTERM else 130, err)
            self.assertEqual(len(err.splitlines()), 1, err)
            self.assertRegex(err, r"^convert_hf: error: (terminated by SIGTERM|interrupted)\n$")
            self.assertFalse(os.path.exists(out))
            self.assertEqual([f for f in os.listdir(self.tmp) if f.startswith(".tmp-")], [])

    def test_existing_out_untouched_on_failure(self):
        m = gqa_model()
        del m.t["model.norm.weight"]
        d = self.write(m)
        out = os.path.join(self.tmp, "out%d.bin" % self.n)
        with open(out, "wb") as f:
            f.write(b"old")
        p = subprocess.run([sys.executable, CONVERT, d, out], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, universal_newlines=True)
        self.assertEqual(p.returncode, 1)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), b"old")


if __name__ == "__main__":
    unittest.main()
