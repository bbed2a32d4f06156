#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (tests/fuzz/corpus/TARGET/) with the
project's own writers: tiny checkpoints through scripts/mixformat.py (every attention
kind and weight dtype the format has), the committed tiny SentencePiece models, and
short texts. Deterministic; run from anywhere:

    /usr/bin/python3 tests/fuzz/make_corpus.py
"""
import os
import shutil
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import mixformat  # noqa: E402

OUT = os.path.join(ROOT, "tests", "fuzz", "corpus")


def tiny(path, layers, dtype="f32", seed=0, tokenizer=b"", **cfg):
    base = dict(dim=8, n_layers=len(layers), vocab_size=16, max_seq_len=8, hidden_dim=16,
                norm_eps=1e-5, bos_id=1, eos_id=2, rope_theta=10000.0)
    base.update(cfg)
    rng = np.random.default_rng(seed)
    shapes = mixformat.expected_tensors(base, layers)
    tensors = {n: (rng.standard_normal(s) * 0.3).astype(np.float32) for n, s in shapes.items()}
    mixformat.write_model(path, base, layers, tensors, tokenizer_bytes=tokenizer, dtype=dtype)


def loader(d):
    gqa = dict(kind="gqa", n_heads=2, n_kv_heads=1, head_dim=4)
    mha_bias = dict(kind="gqa", n_heads=2, n_kv_heads=2, head_dim=4, rope_dim=2,
                    q_bias=True, k_bias=True, v_bias=True, o_bias=True)
    mla = dict(kind="mla", n_heads=2, q_lora_rank=0, kv_lora_rank=4, qk_nope_head_dim=2,
               qk_rope_head_dim=2, v_head_dim=3)
    mla_q = dict(kind="mla", n_heads=2, q_lora_rank=4, kv_lora_rank=4, qk_nope_head_dim=2,
                 qk_rope_head_dim=2, v_head_dim=2, q_bias=True, kv_bias=True, o_bias=True)
    tiny(os.path.join(d, "gqa_f32.bin"), [gqa])
    tiny(os.path.join(d, "mha_bias_f16_tied.bin"), [mha_bias], dtype="f16", tied=True,
         mlp_bias=True, sliding_window=3)
    tiny(os.path.join(d, "mla_bf16.bin"), [mla], dtype="bf16", rope_pairing="interleaved")
    tiny(os.path.join(d, "mixed_llama3.bin"), [gqa, mla_q], rope_scaling=dict(
        type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
        original_max_position_embeddings=4))
    tiny(os.path.join(d, "mla_yarn.bin"), [mla_q], rope_scaling=dict(
        type="yarn", factor=4.0, original_max_position_embeddings=4, mscale=1.0,
        mscale_all_dim=1.0))
    wide = dict(dim=32, hidden_dim=32)  # block types need rows of a multiple of 32
    gqa32 = dict(kind="gqa", n_heads=2, n_kv_heads=1, head_dim=16)
    mla32 = dict(kind="mla", n_heads=2, q_lora_rank=32, kv_lora_rank=32, qk_nope_head_dim=2,
                 qk_rope_head_dim=2, v_head_dim=2)
    tiny(os.path.join(d, "gqa_q8_0.bin"), [gqa32], dtype="q8_0", **wide)
    tiny(os.path.join(d, "mixed_q4_0.bin"), [gqa32, mla32], dtype="q4_0", **wide)
    with open(os.path.join(ROOT, "tests", "fixtures", "tiny_spm128.model"), "rb") as f:
        spm = f.read()
    tiny(os.path.join(d, "gqa_tok.bin"), [gqa], vocab_size=128, tokenizer=spm)
    # mixture of experts (every router) and Qwen3's qk-norm: the feed-forward descriptor
    moe = dict(ffn="moe", n_experts=4, top_k=2, expert_hidden=8)
    tiny(os.path.join(d, "moe_routers.bin"), [
        dict(gqa, qk_norm=True, **dict(moe, scoring="softmax", norm_topk_prob=True)),
        dict(mla, **dict(moe, shared_hidden=8, scoring="sigmoid", topk_method="noaux_tc",
                         n_group=2, topk_group=1, routed_scaling_factor=2.5)),
        dict(gqa, **dict(moe, topk_method="group_limited_greedy", n_group=2, topk_group=1))])


def tokenizer(d):
    for name in ("tiny_spm128.model", "tiny_spm.model"):
        with open(os.path.join(ROOT, "tests", "fixtures", name), "rb") as f:
            data = f.read()
        with open(os.path.join(d, "model_" + name), "wb") as f:
            f.write(b"\x00" + data)
    texts = [b"Once upon a time, there was a little girl named Lily.",
             b"caf\xc3\xa9 \xe2\x96\x81 \xf0\x9f\x98\x80 <s> </s> <0x41>\n\ttabs  spaces",
             b"\xff\xfe\xc3\x28\xe2\x82 invalid \xed\xa0\x80 utf-8 \xf8\x88\x80\x80\x80"]
    for i, t in enumerate(texts):
        with open(os.path.join(d, "text%d" % i), "wb") as f:
            f.write(b"\x01" + t)


def stories(d):
    texts = [b"One story.\n<|endoftext|>\nTwo\nlines.\n<|endoftext|>\n",
             b"<|endoftext|>\r\nCRLF story\r\n<|endoftext|>\r\n  \n<|endoftext|>",
             b"not a sep <|endoftext|> here\n<|endoftext|>x\n<|endoftext|>\rtail",
             b"<|endoftext|><|endoftext|>\n\n<|endoftext|>\n"]
    for i, t in enumerate(texts):
        for chunk in (0, 7):  # first byte: read size 1 and 8
            with open(os.path.join(d, "s%d_%d" % (i, chunk)), "wb") as f:
                f.write(bytes([chunk]) + t)


def chat(d):
    """Compiled templates (scripts/chat_template.py compile of the committed reference
    templates) and messages files."""
    import json
    import subprocess
    import tempfile
    with open(os.path.join(ROOT, "tests", "fixtures", "chat", "templates.json")) as f:
        templates = json.load(f)["templates"]
    with tempfile.TemporaryDirectory() as tmp:
        for t in templates:
            if t["name"] not in ("llama3.1", "qwen2.5", "zephyr", "mistral-v0.1", "deepseek-r1"):
                continue
            cfg = {k: v for k, v in t.items() if k == "chat_template" or k.endswith("_token")}
            path = os.path.join(tmp, "tokenizer_config.json")
            with open(path, "w") as f:
                json.dump(cfg, f)
            out = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "chat_template.py"),
                                  "compile", path], check=True, capture_output=True).stdout
            with open(os.path.join(d, "template_" + t["name"]), "wb") as f:
                f.write(b"\x00" + out)
    msgs = [[{"role": "user", "content": "Hello!"}],
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
             {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "caf\u00e9 \ud83d\ude00"}],
            [{"role": "assistant", "content": "first"}, {"role": "tool", "content": "x"}],
            [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "r</think>a</think>b"},
             {"role": "user", "content": "</think>"}]]
    for i, m in enumerate(msgs):
        with open(os.path.join(d, "messages%d" % i), "wb") as f:
            f.write(b"\x01" + json.dumps(m).encode())


def hf_tokenizer(d):
    """The real tokenizer.json files of ../shared cut down to their first 400 ids (and
    the merges among them), so that one execution stays cheap; prompt texts."""
    import json
    shared = os.path.join(ROOT, "..", "shared", "data", "tokenizers")
    for name in ("llama3", "mistral"):
        path = os.path.join(shared, name, "tokenizer.json")
        if not os.path.isfile(path):
            print("hf_tokenizer: %s is absent; seeds not rewritten" % path)
            return False
        with open(path, encoding="utf-8") as f:
            tj = json.load(f)
        keep = {k: v for k, v in tj["model"]["vocab"].items() if v < 400}
        merges = [m for m in tj["model"]["merges"]
                  if (lambda a, b: a in keep and b in keep and a + b in keep)(
                      *(m.split(" ", 1) if isinstance(m, str) else m))]
        tj["model"] = dict(tj["model"], vocab=keep, merges=merges)
        tj["added_tokens"] = [t for t in tj.get("added_tokens", []) if t["id"] < 400]
        with open(os.path.join(d, "json_" + name), "wb") as f:
            f.write(b"\x00" + json.dumps(tj, ensure_ascii=False).encode())
    for i, t in enumerate([b"Once upon a time, there was a cat.",
                           b"caf\xc3\xa9 \xf0\x9f\x98\x80 \xff\xfe 12345 <|begin_of_text|>\n\t  x"]):
        with open(os.path.join(d, "text%d" % i), "wb") as f:
            f.write(b"\x01" + t)
    return True


def main():
    for name, fn in (("loader", loader), ("tokenizer", tokenizer), ("stories", stories),
                     ("chat", chat), ("hf_tokenizer", hf_tokenizer)):
        d = os.path.join(OUT, name)
        keep = d + ".old"
        shutil.rmtree(keep, ignore_errors=True)
        if os.path.isdir(d):
            os.rename(d, keep)
        os.makedirs(d)
        if fn(d) is False:  # inputs absent: keep the committed seeds
            shutil.rmtree(d)
            os.rename(keep, d)
        elif os.path.isdir(keep):  # inputs that once crashed a target stay, under their names
            for f in os.listdir(keep):
                if f.startswith("regression_"):
                    shutil.copy(os.path.join(keep, f), os.path.join(d, f))
        shutil.rmtree(keep, ignore_errors=True)
        total = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
        print("%s: %d files, %d bytes" % (d, len(os.listdir(d)), total))


if __name__ == "__main__":
    main()
