"""Hugging Face tokenizer.json in C: ids identical to HF's own implementation.

The expected ids (tests/fixtures/tokenizer/hf_ids.json) were made by
tests/tools/hf_reference_ids.mjs with @huggingface/tokenizers under node, from the
texts in tests/fixtures/tokenizer/texts.json and the four real tokenizers in
../shared/data/tokenizers; never from this code. The tests skip when ../shared is
absent.
"""
import json
import os
import shutil
import subprocess
import tempfile
import unittest

from tests.python import util

SHARED_TOK = os.path.join(os.path.dirname(util.ROOT), "shared", "data", "tokenizers")
FIX = os.path.join(util.FIXTURES, "tokenizer")
NAMES = ["llama3", "qwen3", "deepseek_v3", "mistral"]


def have_shared():
    return all(os.path.isfile(os.path.join(SHARED_TOK, n, "tokenizer.json")) for n in NAMES)


def run(args, timeout=300):
    util.require_run()
    return subprocess.run([util.RUN] + [str(a) for a in args], capture_output=True, timeout=timeout)


@unittest.skipUnless(have_shared(), "../shared/data/tokenizers is absent: skipping the HF tokenizer tests")
class TestHfTokenizerIds(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(os.path.join(FIX, "texts.json"), encoding="utf-8") as f:
            cls.texts = json.load(f)
        with open(os.path.join(FIX, "hf_ids.json"), encoding="utf-8") as f:
            cls.ref = json.load(f)["tokenizers"]
        cls.tmp = tempfile.mkdtemp(prefix="tok_hf_")
        cls.files = []
        for i, t in enumerate(cls.texts):
            p = os.path.join(cls.tmp, "%02d_%s.txt" % (i, t["name"]))
            with open(p, "wb") as f:
                f.write(t["text"].encode("utf-8"))  # the file's exact bytes (CRLF kept)
            cls.files.append(p)

    def tokenizer_path(self, name):
        """The real file, or a derived variant (tests/fixtures/tokenizer/derived.json)."""
        with open(os.path.join(FIX, "derived.json"), encoding="utf-8") as f:
            derived = json.load(f)
        if name not in derived:
            return os.path.join(SHARED_TOK, name, "tokenizer.json")
        d = os.path.join(self.tmp, name)
        os.makedirs(d, exist_ok=True)
        base = derived[name]["base"]
        with open(os.path.join(SHARED_TOK, base, "tokenizer.json"), encoding="utf-8") as f:
            tj = json.load(f)
        tj.update(derived[name]["set"])
        with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(tj, f, ensure_ascii=False)
        shutil.copy(os.path.join(SHARED_TOK, base, "tokenizer_config.json"), d)
        return os.path.join(d, "tokenizer.json")

    def encode_all(self, name):
        args = ["-z", self.tokenizer_path(name)]
        for p in self.files:
            args += ["--encode-file", p]
        p = run(args)
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        lines = p.stdout.decode().split("\n")
        self.assertEqual(lines[-1], "")
        self.assertEqual(len(lines) - 1, len(self.files))
        return [[int(x) for x in line.split()] for line in lines[:-1]]

    def check_ids(self, name):
        got = self.encode_all(name)
        for t, ids in zip(self.texts, got):
            with self.subTest(tokenizer=name, text=t["name"]):
                self.assertEqual(ids, self.ref[name][t["name"]]["ids"])

    def test_llama3_ids(self):
        self.check_ids("llama3")

    def test_qwen3_ids(self):
        self.check_ids("qwen3")

    def test_deepseek_v3_ids(self):
        self.check_ids("deepseek_v3")

    def test_mistral_ids(self):
        self.check_ids("mistral")

    def test_metaspace_variant_ids(self):
        # Mistral's file with a Metaspace pre-tokenizer and decoder (derived.json)
        self.check_ids("mistral_metaspace")

    def test_decode_round_trip(self):
        # decode(encode(text)) == text, and equals HF's decode, for a spread of texts
        picks = ["english", "whitespace_runs", "crlf", "chinese", "emoji_zwj", "combining_marks",
                 "special_chatml", "special_mistral", "code_c", "leading_trailing"]
        texts = {t["name"]: t["text"] for t in self.texts}
        for name in NAMES + ["mistral_metaspace"]:
            tok = self.tokenizer_path(name)
            for tname in picks:
                ref = self.ref[name][tname]
                if not ref["ids"]:
                    continue
                with self.subTest(tokenizer=name, text=tname):
                    p = run(["-z", tok, "--decode-ids", " ".join(map(str, ref["ids"]))])
                    self.assertEqual(p.returncode, 0, p.stderr.decode())
                    out = p.stdout.decode("utf-8")
                    self.assertEqual(out, ref["decoded"])
                    # NFC changes the text; Mistral's Prepend puts a "▁" after every special token;
                    # a lone Metaspace decoder has no ByteFallback (so HF's decode shows <0x0A>)
                    if (name, tname) not in (("qwen3", "combining_marks"), ("mistral", "special_mistral")) \
                            and name != "mistral_metaspace":
                        self.assertEqual(out, texts[tname])


@unittest.skipUnless(have_shared(), "../shared/data/tokenizers is absent: skipping the HF tokenizer tests")
class TestCleanUpTokenizationSpaces(unittest.TestCase):
    """--decode-ids applies transformers' clean_up_tokenization where the config sets
    clean_up_tokenization_spaces (llama3's does; the other three set it false): the
    texts decoded by @huggingface/tokenizers with each tokenizer_config.json
    (tests/fixtures/tokenizer/cleanup.json, tests/tools/hf_cleanup_reference.mjs), from
    -z tokenizer.json (its config read from beside it) and from a .bin whose config
    digest scripts/convert_hf.py wrote."""

    @classmethod
    def setUpClass(cls):
        with open(os.path.join(FIX, "cleanup.json"), encoding="utf-8") as f:
            cls.ref = json.load(f)["tokenizers"]
        cls.tmp = tempfile.mkdtemp(prefix="tok_cleanup_")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def check(self, tok, cases, want_key):
        for i, c in enumerate(cases):
            with self.subTest(tokenizer=tok, case=i):
                p = run(["-z", tok, "--decode-ids", " ".join(map(str, c["ids"]))])
                self.assertEqual(p.returncode, 0, p.stderr.decode())
                self.assertEqual(p.stdout.decode("utf-8"), c[want_key])

    def test_as_the_config_says(self):
        self.assertTrue(self.ref["llama3"]["clean_up_tokenization_spaces"])
        changed = sum(c["decoded"] != c["text"] for c in self.ref["llama3"]["cases"])
        self.assertEqual(changed, len(self.ref["llama3"]["cases"]))  # every case tests it
        for name in NAMES:
            self.check(os.path.join(SHARED_TOK, name, "tokenizer.json"), self.ref[name]["cases"],
                       "decoded")

    def test_embedded_config(self):
        from tests.python.test_tokenizer_embed import write_tiny, convert_hf
        d = os.path.join(self.tmp, "llama3")
        os.makedirs(d, exist_ok=True)
        shutil.copy(os.path.join(SHARED_TOK, "llama3", "tokenizer.json"), d)
        with open(os.path.join(SHARED_TOK, "llama3", "tokenizer_config.json"), encoding="utf-8") as f:
            tc = json.load(f)
        with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump({k: v for k, v in tc.items() if k != "chat_template"}, f)  # the digest only
        kind, tok, rec = convert_hf.tokenizer_files(d, {})
        self.assertTrue(json.loads(rec["config.json"])["clean_up_tokenization_spaces"])
        cases = self.ref["llama3"]["cases"]
        with_cleanup = os.path.join(self.tmp, "with.bin")
        write_tiny(with_cleanup, 128256, tok, kind, rec)
        self.check(with_cleanup, cases, "decoded")
        dig = json.loads(rec["config.json"])
        del dig["clean_up_tokenization_spaces"]  # absent: off, as in transformers >= 4.45
        without = os.path.join(self.tmp, "without.bin")
        write_tiny(without, 128256, tok, kind, {"config.json": json.dumps(dig).encode()})
        self.check(without, cases[:3], "text")


def tiny_tokenizer(**over):
    """A small byte-level BPE tokenizer.json (every byte, a few merges, one special)."""
    chars = [chr(c) for c in range(33, 127)] + ["\u0120", "\u010a"]  # + 'Ġ' (space), 'Ċ' (newline)
    vocab = {c: i for i, c in enumerate(chars)}
    merges = ["h e", "l l", "he ll", "hell o", "\u0120 w"]
    for m in merges:
        vocab[m.replace(" ", "")] = len(vocab)
    tj = {
        "version": "1.0",
        "added_tokens": [{"id": len(vocab), "content": "<|end|>", "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                          "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "fuse_unk": False,
                  "byte_fallback": False, "vocab": vocab, "merges": merges},
    }
    tj.update(over)
    return tj


class TestSentencePieceCli(unittest.TestCase):
    """--encode-file / --decode-ids with a SentencePiece .model and with a .bin embedding it
    (expected ids from SentencePiece's own spm_encode)."""

    def test_encode_decode(self):
        if not shutil.which("spm_encode"):
            self.skipTest("spm_encode (Debian package sentencepiece) is not installed")
        model = os.path.join(util.ROOT, "weights", "tokenizer.model")
        text = "Once upon a time, there was a little girl named Lily. She was 3."
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "t.txt")
            with open(path, "w") as f:
                f.write(text)
            want = subprocess.run(["spm_encode", "--model=" + model, "--output_format=id"],
                                  input=text, capture_output=True, text=True, check=True).stdout.split()
            for tok in (model, os.path.join(util.ROOT, "weights", "mha.bin")):
                with self.subTest(tokenizer=tok):
                    p = run(["-z", tok, "--encode-file", path])
                    self.assertEqual(p.returncode, 0, p.stderr)
                    self.assertEqual(p.stdout.decode().split(), want)
                    p = run(["-z", tok, "--decode-ids", " ".join(want)])
                    self.assertEqual(p.stdout.decode(), text)


class TestHfTokenizerErrors(unittest.TestCase):
    """Bad tokenizer.json files and inputs: one clear error line, non-zero exit."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="tok_bad_")
        cls.text = os.path.join(cls.tmp, "text.txt")
        with open(cls.text, "wb") as f:
            f.write(b"hello world<|end|>")

    def write(self, name, content):
        d = os.path.join(self.tmp, name)
        os.makedirs(d, exist_ok=True)
        p = os.path.join(d, "tokenizer.json")
        with open(p, "w", encoding="utf-8") as f:
            f.write(content if isinstance(content, str) else json.dumps(content))
        return p

    def assert_error(self, args, needle):
        p = run(args)
        err = p.stderr.decode("utf-8", "replace")
        self.assertNotEqual(p.returncode, 0, err)
        self.assertEqual(p.stdout, b"")
        lines = err.strip("\n").split("\n")
        self.assertEqual(len(lines), 1, err)
        self.assertIn(needle, lines[0])
        return lines[0]

    def test_tiny_works(self):
        # the base file is fine (so every error below comes from the one change made)
        tok = self.write("ok", tiny_tokenizer())
        p = run(["-z", tok, "--encode-file", self.text])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.decode().split()[:2], ["99", "100"])  # "hello", "Ġw"
        self.assertEqual(p.stdout.decode().split()[-1], "101")       # <|end|>

    def test_malformed_json(self):
        tok = self.write("malformed", json.dumps(tiny_tokenizer())[:-40])
        self.assert_error(["-z", tok, "--encode-file", self.text], "malformed JSON")

    def test_unknown_model(self):
        tj = tiny_tokenizer()
        tj["model"]["type"] = "WordPiece"
        self.assert_error(["-z", self.write("model", tj), "--encode-file", self.text], "model type 'WordPiece'")

    def test_unknown_normalizer(self):
        tok = self.write("norm", tiny_tokenizer(normalizer={"type": "Sequence", "normalizers": [
            {"type": "NFC"}, {"type": "Precompiled", "precompiled_charsmap": ""}]}))
        self.assert_error(["-z", tok, "--encode-file", self.text], "normalizer type 'Precompiled'")

    def test_unknown_pre_tokenizer(self):
        tok = self.write("pre", tiny_tokenizer(pre_tokenizer={"type": "Whitespace"}))
        self.assert_error(["-z", tok, "--encode-file", self.text], "pre_tokenizer type 'Whitespace'")

    def test_unknown_decoder(self):
        tok = self.write("dec", tiny_tokenizer(decoder={"type": "CTC"}))
        self.assert_error(["-z", tok, "--encode-file", self.text], "decoder type 'CTC'")

    def test_regex_rejected(self):
        tok = self.write("regex", tiny_tokenizer(pre_tokenizer={
            "type": "Split", "pattern": {"Regex": "[z-a]+"}, "behavior": "Isolated", "invert": False}))
        self.assert_error(["-z", tok, "--encode-file", self.text], "regex rejected by PCRE2")

    def test_merge_unknown_token(self):
        tj = tiny_tokenizer()
        tj["model"]["merges"].append("q \u00e9")  # 'é' is not in the vocabulary
        self.assert_error(["-z", self.write("merge", tj), "--encode-file", self.text],
                          "not in the vocabulary")

    def test_invalid_utf8_input(self):
        tok = self.write("ok", tiny_tokenizer())
        bad = os.path.join(self.tmp, "bad.txt")
        with open(bad, "wb") as f:
            f.write(b"abc \xff\xfe def \xc3")
        self.assert_error(["-z", tok, "--encode-file", bad], "not valid UTF-8")

    def test_missing_input_and_tokenizer(self):
        tok = self.write("ok", tiny_tokenizer())
        self.assert_error(["-z", tok, "--encode-file", os.path.join(self.tmp, "nope.txt")], "nope.txt")
        self.assert_error(["-z", os.path.join(self.tmp, "none", "tokenizer.json"), "--encode-file", self.text],
                          "cannot open")

    def test_decode_ids_out_of_range(self):
        tok = self.write("ok", tiny_tokenizer())
        self.assert_error(["-z", tok, "--decode-ids", "1 2 102"], "outside the vocabulary")
        self.assert_error(["-z", tok, "--decode-ids", "1 x"], "not an integer")

    def test_bad_tokenizer_config(self):
        tok = self.write("cfg", tiny_tokenizer())
        with open(os.path.join(self.tmp, "cfg", "tokenizer_config.json"), "w") as f:
            f.write('{"bos_token": "<|nope|>"}')
        self.assert_error(["-z", tok, "--encode-file", self.text], "bos_token '<|nope|>'")
        with open(os.path.join(self.tmp, "cfg", "tokenizer_config.json"), "w") as f:
            f.write('{"bos_token": ')
        self.assert_error(["-z", tok, "--encode-file", self.text], "malformed JSON")


if __name__ == "__main__":
    unittest.main()
