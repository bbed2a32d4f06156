"""Command-line tests for ./run (built by `make run`; this file builds nothing).

Tiny random models are written with scripts/mixformat.py into a temp dir, with
the project tokenizer weights/tokenizer.model (vocab 4096) embedded or not.

  * Every misuse exits non-zero (an exit status, not a signal) with exactly one
    line on stderr, starting with `run: error:`.
  * --info prints valid JSON whose KV sizes match the closed forms; --tokens with
    --print-ids needs no tokenizer; greedy decoding is deterministic; a seed fixes
    the samples; -n 0 generates nothing; --ppl prints tokens= nll= ppl= bpb= with
    ppl == exp(nll) and the token count SentencePiece gives.

    /usr/bin/python3 -m unittest discover -s tests/python -t . -v
"""
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import unittest

import numpy as np

from tests.python import util  # also puts scripts/ on sys.path

import mixformat  # noqa: E402

TOKENIZER = os.path.join(util.ROOT, "weights", "tokenizer.model")
TINY_SPM = os.path.join(util.FIXTURES, "tiny_spm.model")  # 256 pieces
V, D, I, MAX_SEQ = 4096, 16, 32, 64
LAYERS = [
    dict(kind="gqa", n_heads=4, n_kv_heads=2, head_dim=4),
    dict(kind="mla", n_heads=2, q_lora_rank=8, kv_lora_rank=8, qk_nope_head_dim=4,
         qk_rope_head_dim=2, v_head_dim=4),
]
PROMPT = "Once upon a time"
LONG_PROMPT = "Once upon a time there was a little girl named Lily who liked to play outside."
STORIES = [
    "Tom had a red ball. He liked to throw it high in the sky.",
    "The cat sat on the mat. It was a sunny day, and the cat was happy.\nThe end.",
]


def write_tiny(path, tokenizer_bytes, seed=0):
    rng = np.random.default_rng(seed)
    cfg = dict(dim=D, n_layers=len(LAYERS), vocab_size=V, max_seq_len=MAX_SEQ, hidden_dim=I,
               norm_eps=1e-5, bos_id=1, eos_id=-1, rope_theta=10000.0, rope_pairing="neox")
    shapes = mixformat.expected_tensors(cfg, LAYERS)
    tensors = {}
    for name, shape in shapes.items():
        if name.endswith("norm"):
            tensors[name] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            tensors[name] = (0.5 * rng.standard_normal(shape)).astype(np.float32)
    mixformat.write_model(path, cfg, LAYERS, tensors, tokenizer_bytes=tokenizer_bytes)


def run(args, timeout=120):
    util.require_run()
    # sampled text may hold byte-fallback pieces that are not valid UTF-8 on their own
    return subprocess.run([util.RUN] + [str(a) for a in args], capture_output=True,
                          encoding="utf-8", errors="surrogateescape", timeout=timeout)


class CliTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        util.require_run()
        cls.tmp = tempfile.mkdtemp(prefix="mixattn-cli-")
        with open(TOKENIZER, "rb") as f:
            tok = f.read()
        cls.tok = os.path.join(cls.tmp, "tok.bin")       # tokenizer embedded
        cls.notok = os.path.join(cls.tmp, "notok.bin")   # none
        write_tiny(cls.tok, tok)
        write_tiny(cls.notok, None)
        with open(cls.tok, "rb") as f:
            good = f.read()
        cls.bad_magic = os.path.join(cls.tmp, "bad_magic.bin")
        with open(cls.bad_magic, "wb") as f:
            f.write(b"NOTMIXAT" + good[8:])
        cls.truncated = os.path.join(cls.tmp, "truncated.bin")
        with open(cls.truncated, "wb") as f:
            f.write(good[:len(good) // 2])
        cls.empty = os.path.join(cls.tmp, "empty.txt")
        open(cls.empty, "wb").close()
        cls.text = os.path.join(cls.tmp, "stories.txt")
        with open(cls.text, "w") as f:
            f.write(STORIES[0] + "\n<|endoftext|>\n" + STORIES[1] + "\n")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    # --- errors ------------------------------------------------------------------------

    def assert_error(self, args, needle=None):
        p = run(args)
        what = "./run %s" % " ".join(map(str, args))
        self.assertGreater(p.returncode, 0, "%s: exit %d (negative = killed by a signal)\nstderr: %s"
                           % (what, p.returncode, p.stderr))
        lines = p.stderr.splitlines()
        self.assertEqual(len(lines), 1, "%s: expected one line on stderr, got %d:\n%s"
                         % (what, len(lines), p.stderr))
        self.assertTrue(lines[0].startswith("run: error:"), "%s: stderr is %r" % (what, lines[0]))
        if needle:
            self.assertIn(needle, lines[0], what)
        return lines[0]

    def test_unknown_flag(self):
        self.assert_error([self.tok, "--bogus"], "--bogus")
        self.assert_error([self.tok, "-x", "1"], "-x")

    def test_flag_missing_value(self):
        for flag in ["-n", "-t", "-p", "-z", "--tokens", "--mla", "--ppl", "-c", "-s", "--top-p"]:
            with self.subTest(flag=flag):
                self.assert_error([self.tok, flag], flag)

    def test_bad_numbers(self):
        for args in (["-n", "abc"], ["-n", "-1"], ["-n", "5x"], ["-t", "-1"], ["-t", "nan"],
                     ["--top-p", "2"], ["--top-p", "-0.1"], ["--top-k", "x"], ["-c", "0"],
                     ["-s", "-5"], ["--threads", "0"], ["-n", "99999999999999999999"]):
            with self.subTest(args=args):
                self.assert_error([self.tok] + args, args[0])

    def test_missing_model(self):
        missing = os.path.join(self.tmp, "nope.bin")
        self.assert_error([missing, "-p", "hi"], missing)

    def test_directory_as_model(self):
        self.assert_error([self.tmp, "-p", "hi"], self.tmp)

    def test_corrupt_model(self):
        self.assert_error([self.bad_magic, "-p", "hi"], "magic")
        self.assert_error([self.truncated, "-p", "hi"], self.truncated)

    def test_corrupt_model_hostile_name(self):
        # a tensor whose name holds a newline (and an unknown dtype, so the loader
        # reports it by name): the error must still be one line
        with open(self.notok, "rb") as f:
            buf = bytearray(f.read())
        n_layers = int.from_bytes(buf[20:24], "little")
        version = int.from_bytes(buf[8:12], "little")
        e = 256 + (64 if version == 1 else 128) * n_layers  # the first directory entry
        buf[e:e + 64] = b"evil\nname".ljust(64, b"\0")
        buf[e + 64:e + 68] = (7).to_bytes(4, "little")
        path = os.path.join(self.tmp, "hostile_name.bin")
        with open(path, "wb") as f:
            f.write(bytes(buf))
        self.assert_error([path, "--tokens", "1", "--print-ids", "-n", "1"], "dtype")

    def test_prompt_longer_than_context(self):
        self.assert_error([self.tok, "-c", "4", "-p", LONG_PROMPT, "-n", "1"], "context")
        self.assert_error([self.notok, "-c", "2", "--tokens", "1 2 3", "--print-ids", "-n", "1"], "context")

    def test_no_tokenizer_for_text(self):
        self.assert_error([self.notok, "-p", PROMPT, "-n", "2"], "tokenizer")
        # text output needs a tokenizer too, even with --tokens
        self.assert_error([self.notok, "--tokens", "1 2", "-n", "2"], "tokenizer")

    def test_tokenizer_missing_file(self):
        missing = os.path.join(self.tmp, "missing.model")
        self.assert_error([self.tok, "-z", missing, "-p", PROMPT, "-n", "1"], missing)

    def test_tokenizer_vocab_mismatch(self):
        line = self.assert_error([self.tok, "-z", TINY_SPM, "-p", PROMPT, "-n", "1"], "vocab")
        self.assertIn("256", line)
        self.assertIn("4096", line)

    def test_tokens_out_of_range(self):
        for ids in ["1 4096", "5000", "-1", "1 2 99999999999999999999"]:
            with self.subTest(ids=ids):
                self.assert_error([self.notok, "--tokens", ids, "--print-ids", "-n", "1"], "--tokens")

    def test_tokens_garbage(self):
        for ids in ["one two", "1 two 3", "1;2", "0x"]:
            with self.subTest(ids=ids):
                self.assert_error([self.notok, "--tokens", ids, "--print-ids", "-n", "1"], "--tokens")

    def test_tokens_empty(self):
        for ids in ["", "   "]:
            with self.subTest(ids=ids):
                self.assert_error([self.notok, "--tokens", ids, "--print-ids", "-n", "1"], "no token ids")

    def test_generation_stops_at_context(self):
        # 3 prompt tokens, context 4: one more position to fill, so at most 2 samples
        out = self.ok([self.notok, "--tokens", "1 2 3", "-c", "4", "-n", "10", "-t", "0", "--print-ids"])
        ids = out.split()
        self.assertTrue(1 <= len(ids) <= 2, out)

    def test_mla_bogus(self):
        self.assert_error([self.tok, "--mla", "bogus", "-p", PROMPT], "--mla")

    def test_ppl_missing_and_empty(self):
        missing = os.path.join(self.tmp, "missing.txt")
        self.assert_error([self.tok, "--ppl", missing], missing)
        self.assert_error([self.tok, "--ppl", self.empty], "--ppl")

    # --- working runs -------------------------------------------------------------------

    def ok(self, args):
        p = run(args)
        self.assertEqual(p.returncode, 0, "./run %s exited %d\nstderr: %s"
                         % (" ".join(map(str, args)), p.returncode, p.stderr))
        return p.stdout

    def test_info_json(self):
        for model, embedded in ((self.tok, True), (self.notok, False)):
            with self.subTest(model=os.path.basename(model)):
                info = json.loads(self.ok([model, "--info", "-c", "32", "--kv-type", "f32"]))
                self.assertEqual(info["dim"], D)
                self.assertEqual(info["n_layers"], 2)
                self.assertEqual(info["vocab_size"], V)
                self.assertEqual(info["max_seq_len"], MAX_SEQ)
                self.assertEqual(info["tokenizer_embedded"], embedded)
                self.assertEqual([l["kind"] for l in info["layers"]], ["gqa", "mla"])
                want = [2 * 2 * 4 * 4, (8 + 2) * 4]  # 2*Hkv*d floats; dc+dr floats (f32 cache)
                self.assertEqual(info["kv_type"], "f32")
                self.assertEqual([l["kv_bytes_per_token"] for l in info["layers"]], want)
                self.assertEqual(info["kv_bytes_per_token"], sum(want))
                self.assertEqual(info["context"], 32)
                self.assertEqual(info["kv_bytes_at_context"], sum(want) * 32)
                n_params = sum(int(np.prod(s)) for s in
                               mixformat.expected_tensors(dict(dim=D, n_layers=2, vocab_size=V,
                                                               hidden_dim=I), LAYERS).values())
                self.assertEqual(info["n_params"], n_params)
                # the default cache is f16: half the bytes
                info16 = json.loads(self.ok([model, "--info", "-c", "32"]))
                self.assertEqual((info16["kv_type"], info16["kv_bytes_per_token"]), ("f16", sum(want) // 2))
                # a small file is mapped as it comes (model/file_map.c): nothing in 2 MB pages
                # (the file is far smaller than one), nothing read again
                self.assertEqual(info["file_bytes"], os.path.getsize(model))
                self.assertEqual((info["huge_page_bytes"], info["reread_for_huge_pages"]), (0, False))

    def test_tokens_print_ids_without_tokenizer(self):
        args = [self.notok, "--tokens", "1 5 9", "-n", "6", "-t", "0", "--print-ids"]
        out = self.ok(args)
        ids = [int(t) for t in out.split()]
        self.assertEqual(len(ids), 6)
        self.assertTrue(all(0 <= t < V for t in ids), ids)
        self.assertEqual(self.ok(args), out)
        # the same ids come out of the model with the tokenizer embedded (same weights)
        self.assertEqual(self.ok([self.tok] + args[1:]), out)

    def test_greedy_deterministic(self):
        a = self.ok([self.tok, "-p", PROMPT, "-n", "12", "-t", "0", "-s", "1"])
        b = self.ok([self.tok, "-p", PROMPT, "-n", "12", "-t", "0", "-s", "2"])
        self.assertEqual(a, b)  # greedy ignores the seed
        self.assertTrue(a.startswith(PROMPT), a)
        self.assertGreater(len(a), len(PROMPT))
        # naive and absorbed MLA agree on the greedy ids
        ids = lambda mode: self.ok([self.notok, "--tokens", "1 425 434", "-n", "10", "-t", "0",
                                    "--print-ids", "--mla", mode])
        self.assertEqual(ids("naive"), ids("absorbed"))

    def test_seeds(self):
        def sample(seed):
            return self.ok([self.tok, "-p", PROMPT, "-n", "20", "-t", "1", "-s", str(seed)])
        self.assertEqual(sample(7), sample(7))
        outs = {sample(s) for s in (7, 8, 9)}
        self.assertGreater(len(outs), 1, "three seeds gave the same text")

    def test_zero_steps(self):
        out = self.ok([self.notok, "--tokens", "1 2 3", "-n", "0", "--print-ids"])
        self.assertEqual(out.strip(), "")
        out = self.ok([self.tok, "-p", PROMPT, "-n", "0"])
        self.assertEqual(out.rstrip("\n"), PROMPT)  # the echoed prompt and nothing else

    def parse_ppl(self, out):
        m = re.search(r"tokens=(\d+).*\bbytes=(\d+).*\bnll=([0-9.]+) ppl=([0-9.]+) bpb=([0-9.]+)", out)
        self.assertIsNotNone(m, "no tokens= nll= ppl= bpb= line in %r" % out)
        return int(m.group(1)), int(m.group(2)), float(m.group(3)), float(m.group(4)), float(m.group(5))

    def test_ppl(self):
        import sentencepiece as spm
        sp = spm.SentencePieceProcessor(model_file=TOKENIZER)
        # [BOS] story (no EOS: eos_id is -1): one prediction per text token
        want_tokens = sum(len(sp.encode(s)) for s in STORIES)
        want_bytes = sum(len(s.encode()) for s in STORIES)
        results = []
        for ctx in ("64", "8"):  # whole stories, and windows of 8 positions
            tokens, nbytes, nll, ppl, bpb = self.parse_ppl(self.ok([self.tok, "--ppl", self.text, "-c", ctx]))
            self.assertEqual(tokens, want_tokens)
            self.assertEqual(nbytes, want_bytes)
            self.assertTrue(0 < nll < 50, nll)
            # ppl printed with 4 decimals, nll with 6
            self.assertLessEqual(abs(ppl - math.exp(nll)), 1e-4 + 1e-6 * ppl)
            self.assertAlmostEqual(bpb, nll * tokens / math.log(2) / nbytes,
                                   delta=1e-5 * bpb + 2e-6)
            results.append(nll)
        # with 8-position windows the model sees less context: a different nll
        self.assertNotEqual(results[0], results[1])


if __name__ == "__main__":
    unittest.main()
