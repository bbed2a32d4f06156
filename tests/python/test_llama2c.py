"""scripts/convert_llama2c.py: llama2.c checkpoints and tokenizer.bin files.

Everything llama2.c-shaped here is written by this test with numpy and struct, from
the layout llama2.c documents (no llama2.c code): tiny random checkpoints in the
export versions 0 (tied and untied, GQA), 1 and 2 (int8 groups), and a small
tokenizer.bin with llama2.c's fixed layout (<unk>, BOS, EOS, 256 byte pieces, then
pieces with merge scores).

  * logits of ./run on the converted file agree within 1e-4 with a float64 numpy
    forward pass of llama2.c's model written here (RMSNorm eps 1e-5, RoPE on
    adjacent pairs, SwiGLU), for every export version;
  * the embedded tokenizer encodes like llama2.c's algorithm, implemented here in a
    few lines of Python (dummy-prefix space, code points or byte fallback, merge the
    best-scoring pair), and ./run echoes the prompt back unchanged;
  * bad files (truncated, trailing bytes, wrong vocabulary size, wrong layout, bad
    version) give one error line and no output file;
  * with ../peers/llama2.c/tokenizer.bin present (the real 32000-piece tokenizer),
    its SentencePiece conversion encodes a varied text set exactly as the
    reference algorithm does (skipped with a message when absent).
"""
import os
import struct
import subprocess
import sys
import tempfile
import unittest

import numpy as np

from tests.python import util  # also puts scripts/ on sys.path

import convert_llama2c  # noqa: E402

CONVERT = os.path.join(util.SCRIPTS, "convert_llama2c.py")
REAL_TOKENIZER = os.path.join(util.ROOT, "..", "..", "peers", "llama2.c", "tokenizer.bin")
if not os.path.exists(REAL_TOKENIZER):
    REAL_TOKENIZER = "/work/peers/llama2.c/tokenizer.bin"

WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "Lily", "happy", "ball", "é"]


# --- an independent llama2.c writer ------------------------------------------------

def tiny_vocab():
    """[(bytes, score)] with llama2.c's layout: 0 <unk>, 1 BOS, 2 EOS, 3..258 bytes."""
    toks = [(b"<unk>", 0.0), (b"\n<s>\n", 0.0), (b"\n</s>\n", 0.0)]
    toks += [(("<0x%02X>" % b).encode(), 0.0) for b in range(256)]
    chars = sorted(set("".join(WORDS) + " ."))
    pieces = [c.encode() for c in chars]
    # every prefix of " word" and "word" as a piece, shorter pieces scoring higher
    # (as in a trained BPE, where merges made earlier score higher)
    for w in WORDS:
        for form in (" " + w, w):
            cps = list(form)
            for k in range(2, len(cps) + 1):
                p = "".join(cps[:k]).encode()
                if p not in pieces:
                    pieces.append(p)
    pieces.append(b"  ")  # a whitespace run piece
    for i, p in enumerate(pieces):
        toks.append((p, -float(i)))
    return toks


def write_tokenizer(path, toks):
    with open(path, "wb") as f:
        f.write(struct.pack("<i", max(len(b) for b, _ in toks)))
        for b, s in toks:
            f.write(struct.pack("<fi", s, len(b)) + b)


def random_weights(c, tied, seed):
    rng = np.random.default_rng(seed)
    D, I, L, V = c["dim"], c["hidden_dim"], c["n_layers"], c["vocab_size"]
    hd = D // c["n_heads"]
    q, kv = c["n_heads"] * hd, c["n_kv_heads"] * hd

    def r(*shape, scale=0.3):
        return (scale * rng.standard_normal(shape)).astype(np.float32)
    w = dict(emb=r(V, D, scale=1.0), attn_norm=1 + r(L, D, scale=0.1), wq=r(L, q, D),
             wk=r(L, kv, D), wv=r(L, kv, D), wo=r(L, D, q), ffn_norm=1 + r(L, D, scale=0.1),
             w1=r(L, I, D), w2=r(L, D, I), w3=r(L, I, D), norm=1 + r(D, scale=0.1))
    w["out"] = w["emb"] if tied else r(V, D)
    return w


def quantize(a, group):
    """llama2.c's version-2 groups: symmetric int8 with one float32 scale per group."""
    g = a.astype(np.float32).reshape(-1, group)
    scale = (np.abs(g).max(axis=1) / 127.0).astype(np.float32)
    q = np.round(g / scale[:, None]).astype(np.int8)
    deq = (q.astype(np.float32) * scale[:, None]).reshape(a.shape)
    return q.tobytes() + scale.astype("<f4").tobytes(), deq


def write_checkpoint(path, c, w, tied, version, group=32):
    """Writes the export; returns the weights as the runtime should see them."""
    V = c["vocab_size"]
    p = (c["dim"], c["hidden_dim"], c["n_layers"], c["n_heads"], c["n_kv_heads"],
         V if (tied or version > 0) else -V, c["seq_len"])
    f32 = lambda a: np.ascontiguousarray(a, dtype="<f4").tobytes()  # noqa: E731
    L = c["n_layers"]
    hd = c["dim"] // c["n_heads"]
    with open(path, "wb") as f:
        if version == 0:
            f.write(struct.pack("<7i", *p))
            f.write(f32(w["emb"]))
            for k in ("attn_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w1", "w2", "w3"):
                f.write(f32(w[k]))
            f.write(f32(w["norm"]))
            f.write(b"\0" * (4 * c["seq_len"] * hd))  # the two unused RoPE tables
            if not tied:
                f.write(f32(w["out"]))
            return w
        head = struct.pack("<Ii7iB", 0x616B3432, version, *p, int(tied))
        if version == 2:
            head += struct.pack("<i", group)
        f.write(head.ljust(256, b"\0"))
        f.write(f32(w["attn_norm"]) + f32(w["ffn_norm"]) + f32(w["norm"]))
        mats = ["emb"] + [(k, n) for k in ("wq", "wk", "wv", "wo", "w1", "w2", "w3")
                          for n in range(L)]
        if not tied:
            mats.append("out")
        seen = dict(w)
        for m in mats:
            a = w[m] if isinstance(m, str) else w[m[0]][m[1]]
            if version == 1:
                f.write(f32(a))
                continue
            blob, deq = quantize(a, group)
            f.write(blob)
            if isinstance(m, str):
                seen[m] = deq
            else:
                seen[m[0]] = seen[m[0]].copy()
                seen[m[0]][m[1]] = deq
        if tied:
            seen["out"] = seen["emb"]
        return seen


# --- independent references --------------------------------------------------------

def reference_logits(c, w, ids):
    """float64 forward pass of llama2.c's model, all positions: [len(ids), V]."""
    D, H, Hkv = c["dim"], c["n_heads"], c["n_kv_heads"]
    hd = D // H
    W = {k: np.asarray(v, dtype=np.float64) for k, v in w.items()}

    def rms(x, g):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + 1e-5) * g

    def rope(x, pos):  # x [T, heads*hd]: rotate (2j, 2j+1) by pos * 10000^(-2j/hd)
        x = x.copy()
        j = (np.arange(0, x.shape[1], 2) % hd).astype(np.float64)
        ang = pos[:, None] * (1.0 / 10000.0 ** (j / hd))[None, :]
        a, b = x[:, 0::2].copy(), x[:, 1::2].copy()
        x[:, 0::2] = a * np.cos(ang) - b * np.sin(ang)
        x[:, 1::2] = a * np.sin(ang) + b * np.cos(ang)
        return x
    T = len(ids)
    pos = np.arange(T, dtype=np.float64)
    x = W["emb"][ids]
    for n in range(c["n_layers"]):
        h = rms(x, W["attn_norm"][n])
        q = rope(h @ W["wq"][n].T, pos)
        k = rope(h @ W["wk"][n].T, pos)
        v = h @ W["wv"][n].T
        out = np.zeros((T, H * hd))
        for hh in range(H):
            g = hh // (H // Hkv)
            qs, ks, vs = (q[:, hh * hd:(hh + 1) * hd], k[:, g * hd:(g + 1) * hd],
                          v[:, g * hd:(g + 1) * hd])
            s = qs @ ks.T / np.sqrt(hd)
            s[np.triu_indices(T, 1)] = -np.inf
            s = np.exp(s - s.max(axis=1, keepdims=True))
            out[:, hh * hd:(hh + 1) * hd] = (s / s.sum(axis=1, keepdims=True)) @ vs
        x = x + out @ W["wo"][n].T
        h = rms(x, W["ffn_norm"][n])
        a = h @ W["w1"][n].T
        x = x + ((a / (1 + np.exp(-a))) * (h @ W["w3"][n].T)) @ W["w2"][n].T
    return rms(x, W["norm"]) @ W["out"].T


def reference_encode(toks, text):
    """llama2.c's tokenizer semantics (SentencePiece BPE by scores), no BOS."""
    index = {}
    for i, (b, _) in enumerate(toks):
        index.setdefault(b, i)
    if not text:
        return []
    ids = [index[b" "]]
    for ch in text:
        b = ch.encode()
        if b in index:
            ids.append(index[b])
        else:
            ids.extend(x + 3 for x in b)
    while True:
        best, at = None, -1
        for i in range(len(ids) - 1):
            j = index.get(toks[ids[i]][0] + toks[ids[i + 1]][0])
            if j is not None and (best is None or toks[j][1] > toks[best][1]):
                best, at = j, i
        if best is None:
            return ids
        ids[at:at + 2] = [best]


def convert_cli(*args):
    return subprocess.run([sys.executable, CONVERT] + [str(a) for a in args],
                          capture_output=True, text=True, timeout=300)


class Llama2cTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.d = self.tmp.name
        self.toks = tiny_vocab()
        self.tok_path = os.path.join(self.d, "tokenizer.bin")
        write_tokenizer(self.tok_path, self.toks)
        self.c = dict(dim=32, hidden_dim=48, n_layers=2, n_heads=4, n_kv_heads=2,
                      vocab_size=len(self.toks), seq_len=32)

    def tearDown(self):
        self.tmp.cleanup()

    def convert(self, version, tied, seed=0):
        w = random_weights(self.c, tied, seed)
        src = os.path.join(self.d, "v%d.bin" % version)
        seen = write_checkpoint(src, self.c, w, tied, version)
        out = os.path.join(self.d, "out%d.bin" % version)
        p = convert_cli(src, self.tok_path, out)
        self.assertEqual(p.returncode, 0, p.stderr)
        return out, seen

    def check_logits(self, version, tied):
        out, w = self.convert(version, tied)
        ids = [1, 300, 5, 77, 260, 299, 3, 150, 42, 9]
        got = util.dump_logits(out, ids, self.c["vocab_size"], os.path.join(self.d, "l.f32"))
        want = reference_logits(self.c, w, ids)
        err = np.abs(got - want).max()
        self.assertLess(err, 1e-4, "v%d tied=%s: max |logit diff| %.3g" % (version, tied, err))

    def test_v0_untied_logits(self):
        self.check_logits(0, tied=False)

    def test_v0_tied_logits(self):
        self.check_logits(0, tied=True)

    def test_v1_logits(self):
        self.check_logits(1, tied=False)

    def test_v2_int8_logits(self):
        self.check_logits(2, tied=True)

    def test_v2_to_q8_0(self):
        """--dtype q8_0 re-quantizes into ggml blocks: logits agree within 1e-4 with the
        float64 forward on the stored (dequantized) weights, and stay close to those of
        the export's own weights."""
        import mixformat
        w = random_weights(self.c, True, 1)
        src = os.path.join(self.d, "v2.bin")
        seen = write_checkpoint(src, self.c, w, True, 2)
        out = os.path.join(self.d, "q8.bin")
        p = convert_cli(src, self.tok_path, out, "--dtype", "q8_0")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(mixformat.stored_dtypes(out)["layers.0.wq"], "q8_0")
        _, _, t, _ = mixformat.read_model(out)
        stored = dict(emb=t["tok_embeddings"], norm=t["norm"])
        stored["out"] = stored["emb"]
        for k in ("attn_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w1", "w2", "w3"):
            stored[k] = np.stack([t["layers.%d.%s" % (n, k)] for n in range(self.c["n_layers"])])
        ids = [1, 300, 5, 77, 260, 299, 3, 150]
        # the stored blocks, widened exactly to f32 (quantize.py --type f32), are the
        # weights the float64 reference runs on
        wide = os.path.join(self.d, "wide.bin")
        q = subprocess.run([sys.executable, os.path.join(util.SCRIPTS, "quantize.py"), out, wide,
                            "--type", "f32"], capture_output=True, text=True)
        self.assertEqual(q.returncode, 0, q.stderr)
        got = util.dump_logits(wide, ids, self.c["vocab_size"], os.path.join(self.d, "w.f32"))
        self.assertLess(np.abs(got - reference_logits(self.c, stored, ids)).max(), 1e-4)
        self.assertLess(np.abs(got - reference_logits(self.c, seen, ids)).max(), 0.2)  # measured 0.064
        # read as stored, the q8_0 kernels also round each activation vector to 8-bit blocks
        # (docs/KERNELS.md): on these random weights (logits up to ~19) measured 2.66 from the
        # widened run; a wrong block layout gives errors of the logits' own size
        typed = util.dump_logits(out, ids, self.c["vocab_size"], os.path.join(self.d, "q.f32"))
        self.assertLess(np.abs(typed - got).max(), 6.0)
        self.assertLess(np.abs(typed - got).mean(), 0.5)

    def test_info(self):
        out, _ = self.convert(0, tied=False)
        i = util.info(out)
        self.assertEqual((i["dim"], i["n_layers"], i["vocab_size"], i["max_seq_len"],
                          i["bos_id"], i["eos_id"], i["tied_embeddings"]),
                         (32, 2, len(self.toks), 32, 1, 2, False))
        self.assertEqual(i["rope"]["pairing"], "interleaved")
        self.assertTrue(i["tokenizer_embedded"])

    def test_tokenizer_encodes_like_llama2c(self):
        out, _ = self.convert(0, tied=True)
        blob = convert_llama2c.sentencepiece_model(self.toks)
        texts = ["the cat sat on the mat.", "Lily  ran", " happy dog", "", "é ball é",
                 "zebra ñ 日本", "the\nmat\t", "thecat"]
        for text, ids in zip(texts, runtime_encodes(blob, texts, self.d)):
            with self.subTest(text=text):
                self.assertEqual(ids, reference_encode(self.toks, text))
        # the runtime: encodes with BOS, echoes the prompt back unchanged
        text = "the cat sat on the mat. Lily ran zebra é"
        echoed = util.run_cli([out, "-p", text, "-n", "0"])
        self.assertEqual(echoed, text)

    def test_bad_inputs(self):
        w = random_weights(self.c, False, 0)
        good = os.path.join(self.d, "good.bin")
        write_checkpoint(good, self.c, w, False, 0)
        with open(good, "rb") as f:
            data = f.read()
        cases = {}
        cases["truncated"] = data[:-10]
        cases["trailing"] = data + b"\0" * 8
        cases["short"] = data[:20]
        cases["bad version"] = struct.pack("<Ii", 0x616B3432, 7).ljust(256, b"\0") + data[28:]
        cases["zero dim"] = struct.pack("<i", 0) + data[4:]
        cases["heads do not divide"] = data[:12] + struct.pack("<i", 5) + data[16:]
        for name, blob in cases.items():
            with self.subTest(case=name):
                src = os.path.join(self.d, "bad.bin")
                with open(src, "wb") as f:
                    f.write(blob)
                out = os.path.join(self.d, "bad_out.bin")
                p = convert_cli(src, self.tok_path, out)
                self.assertEqual(p.returncode, 1)
                self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)
                self.assertIn("convert_llama2c: error:", p.stderr)
                self.assertFalse(os.path.exists(out))
        tok_cases = {
            "fewer tokens": self.toks[:-1],
            "more tokens": self.toks + [(b"zz", -99.0)],
            "no byte pieces": self.toks[:3] + [(b"x%d" % i, 0.0) for i in range(256)]
            + self.toks[259:],
            "duplicate piece": self.toks[:-1] + [self.toks[-2]],
        }
        for name, toks in tok_cases.items():
            with self.subTest(case=name):
                tp = os.path.join(self.d, "bad_tok.bin")
                write_tokenizer(tp, toks)
                out = os.path.join(self.d, "bad_out.bin")
                p = convert_cli(good, tp, out)
                self.assertEqual(p.returncode, 1, p.stderr)
                self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)
                self.assertFalse(os.path.exists(out))


TEXTS = [
    "Once upon a time, there was a little girl named Lily.", "", " ", "  two leading",
    "trailing  ", "tabs\tand\nnewlines\n\n", "Ünïcödé façade naïve café",
    "日本語のテキスト、中文文本", "emoji 👨‍👩‍👧‍👦 and 🎉", "combining e\u0301 a\u0308",
    "numbers 1234567890 3.14159 -42", "code: def f(x):\n    return x**2  # c",
    "http://example.com/a?b=c&d=e", "<s> literal </s> <unk> <0x0A> [INST]", "\n<s>\n",
    "Ωμέγα Русский עברית العربية हिन्दी", "x\r\ny", "\x01\x02 control", "a" * 40,
]


def runtime_encodes(model_bytes, texts, tmp):
    """./run -z (the embedded SentencePiece model) --encode-file, one line per text."""
    mp = os.path.join(tmp, "l2c.model")
    with open(mp, "wb") as f:
        f.write(model_bytes)
    args = ["-z", mp]
    for i, t in enumerate(texts):
        p = os.path.join(tmp, "t%d.txt" % i)
        with open(p, "w", encoding="utf-8") as f:
            f.write(t)
        args += ["--encode-file", p]
    out = util.run_cli(args)
    return [[int(x) for x in line.split()] for line in out.split("\n")[:len(texts)]]


@unittest.skipUnless(os.path.exists(REAL_TOKENIZER),
                     "llama2.c's tokenizer.bin (../peers/llama2.c) is absent")
class RealTokenizerTest(unittest.TestCase):
    def test_real_tokenizer(self):
        """The runtime's encodes of the converted real tokenizer equal llama2.c's algorithm
        (checked once against llama2.c's own encode() too: docs/CONVERT.md)."""
        _, toks = convert_llama2c.read_tokenizer(REAL_TOKENIZER, 32000)
        blob = convert_llama2c.sentencepiece_model(toks)
        with tempfile.TemporaryDirectory() as d:
            got = runtime_encodes(blob, TEXTS, d)
        for text, ids in zip(TEXTS, got):
            with self.subTest(text=text):
                self.assertEqual(ids, reference_encode(toks, text))


if __name__ == "__main__":
    unittest.main()
