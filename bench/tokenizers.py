"""Encode speed (MB/s) of the four real tokenizer.json files: this runtime's C tokenizer
(build/bench_tokenize) against Hugging Face's @huggingface/tokenizers under node
(bench/tokenize_node.mjs), on the same ~1 MB texts, best of 3 runs each.

    make bench-tokenizers     (HF_TOKENIZERS_NPM=/work/scratch-npm by default)

Texts: "english" = the first ~1 MB of TinyStories train.txt (cut at a line end);
"multilingual" = tests/fixtures/tokenizer/texts.json joined and repeated to ~1 MB.
"""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")
NPM = os.environ.get("HF_TOKENIZERS_NPM", "/work/scratch-npm")
BIN = os.path.join(ROOT, "build", "bench_tokenize")
NAMES = ["llama3", "qwen3", "deepseek_v3", "mistral"]
SIZE = 1_000_000


def make_texts():
    out = {}
    d = os.path.join(ROOT, "build")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(SHARED, "tinystories", "train.txt"), "rb") as f:
        eng = f.read(SIZE + 10000)
    eng = eng[:eng.rfind(b"\n", 0, SIZE) + 1]
    with open(os.path.join(ROOT, "tests", "fixtures", "tokenizer", "texts.json"), encoding="utf-8") as f:
        one = "\n".join(t["text"] for t in json.load(f)).encode("utf-8")
    multi = (one * (SIZE // len(one) + 1))[:SIZE]
    multi = multi[:multi.rfind(b"\n") + 1]
    for name, data in (("english", eng), ("multilingual", multi)):
        p = os.path.join(d, "bench_text_%s.txt" % name)
        with open(p, "wb") as f:
            f.write(data)
        out[name] = p
    return out


def run_json(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit("%s failed: %s" % (" ".join(cmd), p.stderr.strip()))
    return json.loads(p.stdout)


def main():
    if not os.path.isdir(os.path.join(SHARED, "tokenizers")):
        print("../shared/data/tokenizers is absent: nothing to measure")
        return 0
    have_node = os.path.isdir(os.path.join(NPM, "node_modules", "@huggingface", "tokenizers"))
    if not have_node:
        print("note: @huggingface/tokenizers not found in %s (set HF_TOKENIZERS_NPM); C only" % NPM)
    texts = make_texts()
    print("| tokenizer | text | bytes | tokens | C MB/s | HF node MB/s | C / HF | C load s | HF load s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in NAMES:
        tj = os.path.join(SHARED, "tokenizers", name, "tokenizer.json")
        for tname, path in texts.items():
            c = run_json([BIN, tj, path, "3"])
            h = run_json(["node", os.path.join(ROOT, "bench", "tokenize_node.mjs"), NPM,
                          os.path.dirname(tj), path, "3"]) if have_node else None
            if h and h["tokens"] != c["tokens"]:
                print("warning: %s/%s: C gives %d tokens, HF %d" % (name, tname, c["tokens"], h["tokens"]))
            print("| %s | %s | %d | %d | %.2f | %s | %s | %.2f | %s |" % (
                name, tname, c["bytes"], c["tokens"], c["mb_per_s"],
                "%.2f" % h["mb_per_s"] if h else "-",
                "%.1fx" % (c["mb_per_s"] / h["mb_per_s"]) if h else "-", c["load_s"],
                "%.2f" % h["load_s"] if h else "-"))
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
