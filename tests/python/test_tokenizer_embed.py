"""A tokenizer.json embedded in the .bin (format v2: tokenizer_kind, tokenizer-config blob),
BOS as the tokenizer's config says, and generation stopping at every end id.

Expected ids come from tests/fixtures/tokenizer/hf_ids.json (made by Hugging Face's
@huggingface/tokenizers, see test_tokenizer_hf.py). Whether -p adds BOS follows
transformers' rules for each real tokenizer_config.json (documented per case below).
Skips when ../shared is absent.
"""
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest

import numpy as np

from tests.python import util
from tests.python.test_tokenizer_hf import SHARED_TOK, FIX, have_shared, run

import convert_hf  # noqa: E402  (scripts/ is on sys.path via util)
import mixformat  # noqa: E402

LAYERS = [dict(kind="gqa", n_heads=2, n_kv_heads=1, head_dim=4)]


def write_tiny(path, vocab, tok=None, kind=None, records=None, eos_id=-1, seed=0):
    """A random 1-layer model of the given vocabulary with a tokenizer embedded."""
    cfg = dict(dim=8, n_layers=1, vocab_size=vocab, max_seq_len=64, hidden_dim=16,
               norm_eps=1e-5, tied=True, bos_id=-1, eos_id=eos_id, rope_theta=10000.0)
    rng = np.random.default_rng(seed)
    shapes = mixformat.expected_tensors(mixformat.defaults(cfg), LAYERS)
    tensors = {n: rng.standard_normal(s).astype(np.float32) * (0.5 if len(s) > 1 else 0.0) + (
        1.0 if len(s) == 1 else 0.0) for n, s in shapes.items()}
    mixformat.write_model(path, cfg, LAYERS, tensors, tokenizer_bytes=tok, tokenizer_kind=kind,
                          tokenizer_config=records)


def digest(**kv):
    return {"config.json": json.dumps(kv).encode()}


def prompt_tokens(stderr):
    m = re.search(r"prefill: (\d+) tokens", stderr)
    if not m:
        raise AssertionError("no prefill line in: " + stderr)
    return int(m.group(1))


@unittest.skipUnless(have_shared(), "../shared/data/tokenizers is absent: skipping")
class TestEmbeddedTokenizer(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="tok_embed_")
        with open(os.path.join(FIX, "hf_ids.json"), encoding="utf-8") as f:
            cls.ref = json.load(f)["tokenizers"]
        with open(os.path.join(FIX, "texts.json"), encoding="utf-8") as f:
            cls.texts = {t["name"]: t["text"] for t in json.load(f)}
        cls.text = os.path.join(cls.tmp, "english.txt")
        with open(cls.text, "wb") as f:
            f.write(cls.texts["english"].encode())

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def model(self, name, vocab, records=None, eos_id=-1):
        """(path) of a tiny model embedding ../shared's tokenizer.json of name."""
        path = os.path.join(self.tmp, "%s_%d_%d.bin" % (name, len(json.dumps(
            {k: v.decode() for k, v in (records or {}).items()})), eos_id))
        if not os.path.exists(path):
            with open(os.path.join(SHARED_TOK, name, "tokenizer.json"), "rb") as f:
                write_tiny(path, vocab, f.read(), "hf", records, eos_id)
        return path

    def test_encode_file_from_bin(self):
        m = self.model("llama3", 128256)
        want = " ".join(map(str, self.ref["llama3"]["english"]["ids"]))
        for args in (["-z", m], [m]):  # -z MODEL.bin, and the model's own tokenizer
            with self.subTest(args=args):
                p = run(args + ["--encode-file", self.text])
                self.assertEqual(p.returncode, 0, p.stderr.decode())
                self.assertEqual(p.stdout.decode().strip(), want)
        info = json.loads(util.run_cli([m, "--info"]))
        self.assertEqual(info["tokenizer_kind"], "tokenizer.json")
        _, tok, rec = mixformat.read_tokenizer(m)
        with open(os.path.join(SHARED_TOK, "llama3", "tokenizer.json"), "rb") as f:
            self.assertEqual(tok, f.read())  # embedded byte for byte
        self.assertEqual(rec, {})

    def test_bos_as_the_config_says(self):
        # transformers: llama3 here is PreTrainedTokenizerFast with a ByteLevel post-processor
        # (adds nothing); qwen3 add_bos_token false, bos null; deepseek_v3 LlamaTokenizerFast with
        # add_bos_token true (adds <｜begin▁of▁sentence｜> = 0); mistral add_bos_token true (<s> = 1)
        cases = [("llama3", 128256, None), ("qwen3", 151936, None), ("deepseek_v3", 129280, 0),
                 ("mistral", 32000, 1)]
        for name, vocab, bos in cases:
            with self.subTest(tokenizer=name):
                with open(os.path.join(SHARED_TOK, name, "tokenizer_config.json"), "rb") as f:
                    tc = json.load(f)
                keep = {k: (v["content"] if isinstance(v, dict) else v) for k, v in tc.items()
                        if k in ("bos_token", "eos_token", "add_bos_token", "add_eos_token")}
                m = self.model(name, vocab, digest(**keep))
                p = run([m, "-p", self.texts["english"], "-n", "1", "-t", "0", "--print-ids"])
                self.assertEqual(p.returncode, 0, p.stderr.decode())
                n = len(self.ref[name]["english"]["ids"]) + (bos is not None)
                self.assertEqual(prompt_tokens(p.stderr.decode()), n)
                # the same rules straight from the folder (-z tokenizer.json + its config)
                p = run([m, "-z", os.path.join(SHARED_TOK, name, "tokenizer.json"), "-p",
                         self.texts["english"], "-n", "1", "-t", "0", "--print-ids"])
                self.assertEqual(p.returncode, 0, p.stderr.decode())
                self.assertEqual(prompt_tokens(p.stderr.decode()), n)

    def test_stops_at_every_end_id(self):
        free = self.model("llama3", 128256)
        ids = [int(x) for x in util.run_cli([free, "--tokens", "9906 1917", "-n", "8", "-t", "0",
                                             "--print-ids"]).split()]
        self.assertEqual(len(ids), 8)
        stop = next(i for i in range(1, 8) if ids[i] not in ids[:i])  # first new id after 0
        self.assertLess(stop, 7)  # so that stopping there is visible
        ends = [128001, ids[stop], 128009]  # a generation_config.json eos_token_id list
        m = self.model("llama3", 128256, digest(eos_token_id=[e for e in ends if e not in ids[:stop]]))
        got = [int(x) for x in util.run_cli([m, "--tokens", "9906 1917", "-n", "8", "-t", "0",
                                             "--print-ids"]).split()]
        self.assertEqual(got, ids[:stop + 1])

    def assert_error(self, args, needle):
        p = run(args)
        err = p.stderr.decode("utf-8", "replace").strip("\n").split("\n")
        self.assertNotEqual(p.returncode, 0)
        self.assertEqual(len(err), 1, err)
        self.assertIn(needle, err[0])

    def patched(self, src, name, offset, fmt, value):
        dst = os.path.join(self.tmp, name)
        with open(src, "rb") as f:
            b = bytearray(f.read())
        struct.pack_into(fmt, b, offset, value)
        with open(dst, "wb") as f:
            f.write(b)
        return dst

    def test_bad_embedding(self):
        m = self.model("mistral", 32000, digest(add_bos_token=True))
        self.assert_error([self.patched(m, "kind3.bin", 124, "<I", 3), "--encode-file", self.text],
                          "unknown tokenizer_kind 3")
        self.assert_error([self.patched(m, "kind0.bin", 124, "<I", 0), "--encode-file", self.text],
                          "does not match tokenizer_bytes")
        # kind 1 (SentencePiece) over tokenizer.json bytes: the SentencePiece parser refuses them
        self.assert_error([self.patched(m, "kind1.bin", 124, "<I", 1), "--encode-file", self.text],
                          "SentencePiece")
        self.assert_error([self.patched(m, "cfgpast.bin", 152, "<Q", 1 << 40), "--encode-file",
                           self.text], "tokenizer-config blob")
        # a config blob that is not TKCF records
        with open(m, "rb") as f:
            b = bytearray(f.read())
        cfg_off = struct.unpack_from("<Q", b, 144)[0]
        b[cfg_off:cfg_off + 4] = b"XXXX"
        bad = os.path.join(self.tmp, "cfgmagic.bin")
        with open(bad, "wb") as f:
            f.write(b)
        self.assert_error([bad, "--encode-file", self.text], "bad magic")
        # a digest naming a token the vocabulary lacks
        m2 = self.model("mistral", 32000, digest(bos_token="<nope>"))
        self.assert_error([m2, "--encode-file", self.text], "bos_token '<nope>'")
        # a tokenizer larger than the model's vocabulary
        small = os.path.join(self.tmp, "small.bin")
        with open(os.path.join(SHARED_TOK, "mistral", "tokenizer.json"), "rb") as f:
            write_tiny(small, 1000, f.read(), "hf")
        self.assert_error([small, "-p", "hi", "-n", "1"], "vocab")


@unittest.skipUnless(have_shared(), "../shared/data/tokenizers is absent: skipping")
class TestConverterTokenizer(unittest.TestCase):
    """scripts/convert_hf.py's choice of tokenizer and its config digest."""

    def folder(self, name, generation=None, drop_config=False):
        d = tempfile.mkdtemp(prefix="tok_conv_")
        self.addCleanup(shutil.rmtree, d, True)
        shutil.copy(os.path.join(SHARED_TOK, name, "tokenizer.json"), d)
        if not drop_config:
            shutil.copy(os.path.join(SHARED_TOK, name, "tokenizer_config.json"), d)
        if generation is not None:
            with open(os.path.join(d, "generation_config.json"), "w") as f:
                json.dump(generation, f)
        return d

    def test_tokenizer_json_and_end_ids(self):
        d = self.folder("mistral", {"eos_token_id": [2, 32001]})
        kind, tok, rec = convert_hf.tokenizer_files(d, {"eos_token_id": 2})
        self.assertEqual(kind, "hf")
        with open(os.path.join(d, "tokenizer.json"), "rb") as f:
            self.assertEqual(tok, f.read())
        dig = json.loads(rec["config.json"])
        self.assertEqual(dig, {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>",
                               "eos_token": "</s>", "eos_token_id": [2, 32001],
                               "clean_up_tokenization_spaces": False})

    def test_object_tokens_and_no_config(self):
        d = self.folder("deepseek_v3")
        dig = json.loads(convert_hf.tokenizer_files(d, {})[2]["config.json"])
        self.assertEqual(dig["bos_token"], "<｜begin▁of▁sentence｜>")  # {"content": ...} unwrapped
        d = self.folder("qwen3", drop_config=True)
        self.assertEqual(json.loads(convert_hf.tokenizer_files(d, {})[2]["config.json"]), {})

    def test_spm_model_wins(self):
        d = self.folder("mistral")
        shutil.copy(os.path.join(util.ROOT, "weights", "tokenizer.model"), d)
        self.assertEqual(convert_hf.tokenizer_files(d, {"vocab_size": 4096})[0], "sentencepiece")

    def test_full_conversion(self):
        # a tiny Llama folder with Llama 3's tokenizer files: convert_hf embeds tokenizer.json,
        # the digest and the compiled chat template; ./run then tokenizes as HF does
        from tests.python.test_convert import gqa_model
        import safetensors_np as st
        d = self.folder("llama3", {"eos_token_id": [128001, 128008, 128009]})
        m = gqa_model(V=128256, D=8, L=1, H=2, I=16, lm_head=False, tie_word_embeddings=True,
                      bos_token_id=128000, eos_token_id=128001)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(m.cfg, f)
        st.save_file(m.t, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
        out = os.path.join(d, "out.bin")
        p = subprocess.run([sys.executable, util.CONVERT, d, out], capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stderr, "")  # no "no tokenizer" warning
        kind, tok, rec = mixformat.read_tokenizer(out)
        self.assertEqual(kind, "hf")
        self.assertEqual(sorted(rec), ["chat_template", "config.json"])
        self.assertEqual(json.loads(rec["config.json"])["eos_token_id"], [128001, 128008, 128009])
        info = json.loads(util.run_cli([out, "--info"]))
        self.assertEqual(info["tokenizer_kind"], "tokenizer.json")
        with open(os.path.join(FIX, "texts.json"), encoding="utf-8") as f:
            text = {t["name"]: t["text"] for t in json.load(f)}["special_llama3"]
        with open(os.path.join(FIX, "hf_ids.json"), encoding="utf-8") as f:
            want = json.load(f)["tokenizers"]["llama3"]["special_llama3"]["ids"]
        path = os.path.join(d, "t.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        self.assertEqual([int(x) for x in util.run_cli([out, "--encode-file", path]).split()], want)

    def test_bad_files(self):
        d = self.folder("mistral")
        with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
            f.write("{")
        with self.assertRaises(convert_hf.ConvertError):
            convert_hf.tokenizer_files(d, {})
        d = self.folder("mistral", {"eos_token_id": "two"})
        with self.assertRaises(convert_hf.ConvertError):
            convert_hf.tokenizer_files(d, {})


if __name__ == "__main__":
    unittest.main()
