#!/usr/bin/env python3
"""Train the mixattn model family on TinyStories and export it (docs/TRAINING.md).

    python3 scripts/train.py --data DIR --tokenizer weights/tokenizer.model --out OUTDIR \
        [--models mha,gqa,mqa,mla,hybrid] [--tokens N | --steps N] [--device cuda] [--compile]

DIR holds train.txt and valid.txt (stories separated by a line holding only
<|endoftext|>). The five model definitions live in scripts/models.json; every
model gets the same data, token budget, seed, optimiser and schedule, and only
the attention of its layers differs. The decoder below computes exactly what
the C runtime computes (docs/FORMAT.md): pre-norm RMSNorm blocks, SwiGLU FFN,
tied embeddings, RoPE with the "neox" (split halves) pairing, and per layer
either GQA-family attention (MHA/GQA/MQA) or DeepSeek MLA in its naive form.

For each model NAME it writes OUT/NAME.bin (mixformat, bf16, tokenizer
embedded), OUT/NAME.json (config and results), OUT/NAME.ref.json (token ids and
fp32 logits for checking the runtime). For the models that models.json marks
with "hf" it also writes a Hugging Face folder (OUT/hf_llama, OUT/hf_deepseek),
loads it back with transformers, compares logits and writes OUT/hf_check.json.

    python3 scripts/train.py --hf-from-bin OUTDIR

rebuilds those Hugging Face folders from OUTDIR/gqa.bin and OUTDIR/mla.bin with
numpy alone (no torch needed) and checks them byte for byte against the
sha256 sums in OUTDIR/hf_check.json: the folders need not travel back from the
GPU machine.
"""
import argparse
import hashlib
import json
import math
import os
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
import mixformat
import safetensors_np

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:  # the numpy-only path (--hf-from-bin) runs without torch
    torch = None

    class nn:  # noqa: N801  (lets the classes below be defined; never instantiated)
        Module = object

MODELS_JSON = os.path.join(HERE, "models.json")
SEPARATOR = "<|endoftext|>"
HF_DIRS = {"LlamaForCausalLM": "hf_llama", "DeepseekV3ForCausalLM": "hf_deepseek"}
HF_TOL = 1e-4


def log(*a):
    print(*a, flush=True)


def load_defs(path=MODELS_JSON):
    with open(path) as f:
        return json.load(f)


# ----------------------------------------------------------------------------
# data

def read_stories(path):
    """Stories of a TinyStories text file.

    The file is split on "\\n"; a line equal to <|endoftext|> ends a story; a
    story's text is its lines joined with "\\n", then str.strip(); empty stories
    are skipped."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    stories, cur = [], []
    for line in lines:
        if line == SEPARATOR:
            text = "\n".join(cur).strip()
            if text:
                stories.append(text)
            cur = []
        else:
            cur.append(line)
    text = "\n".join(cur).strip()
    if text:
        stories.append(text)
    return stories


def encode_stories(sp, stories, bos, eos):
    """Each story -> [BOS] + sp.encode(text) + [EOS]."""
    try:
        ids = sp.encode(stories, out_type=int, num_threads=os.cpu_count() or 1)
    except TypeError:  # an old sentencepiece without num_threads
        ids = [sp.encode(s, out_type=int) for s in stories]
    return [[bos] + list(x) + [eos] for x in ids]


def eval_windows(seqs, T):
    """Validation windows: story s (n tokens) predicts s[i] from s[:i], i=1..n-1.
    Window w feeds s[wT : wT+m] at positions 0..m-1 and scores s[wT+1 : wT+m+1],
    m = min(T, n-1-wT). Returns a list of token lists of length m+1."""
    out = []
    for s in seqs:
        n = len(s)
        w = 0
        while w * T < n - 1:
            m = min(T, n - 1 - w * T)
            out.append(s[w * T: w * T + m + 1])
            w += 1
    return out


# ----------------------------------------------------------------------------
# the model (exactly the runtime's math)

def rope_tables(T, r, theta, device):
    """cos/sin [T, r] for the neox pairing: dim j pairs with j + r/2,
    inv_freq[j] = theta^(-2j/r), angle = pos * inv_freq in fp32 (as transformers)."""
    inv = 1.0 / (theta ** (torch.arange(0, r, 2, dtype=torch.int64, device=device).float() / r))
    pos = torch.arange(T, dtype=torch.int64, device=device).float()
    freqs = torch.outer(pos, inv)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x, cos, sin):
    """x [..., T, r]; rotate_half form of the neox pairing."""
    h = x.shape[-1] // 2
    rot = torch.cat((-x[..., h:], x[..., :h]), dim=-1)
    return x * cos.to(x.dtype) + rot * sin.to(x.dtype)


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * y.to(x.dtype)


class GQAAttention(nn.Module):
    """MHA (Hkv = H), GQA, MQA (Hkv = 1): query head h reads KV head h // (H/Hkv)."""

    def __init__(self, D, l):
        super().__init__()
        self.H, self.Hkv, self.d = l["n_heads"], l["n_kv_heads"], l["head_dim"]
        assert self.H % self.Hkv == 0
        self.rope_dim = self.d
        self.wq = nn.Linear(D, self.H * self.d, bias=False)
        self.wk = nn.Linear(D, self.Hkv * self.d, bias=False)
        self.wv = nn.Linear(D, self.Hkv * self.d, bias=False)
        self.wo = nn.Linear(self.H * self.d, D, bias=False)

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.H, self.d).transpose(1, 2)
        k = self.wk(x).view(B, T, self.Hkv, self.d).transpose(1, 2)
        v = self.wv(x).view(B, T, self.Hkv, self.d).transpose(1, 2)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        if self.Hkv != self.H:
            g = self.H // self.Hkv
            k = k.repeat_interleave(g, dim=1)
            v = v.repeat_interleave(g, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.d ** -0.5)
        return self.wo(y.transpose(1, 2).reshape(B, T, self.H * self.d))


class MLAAttention(nn.Module):
    """DeepSeek MLA, naive form, q_lora_rank 0 (docs/FORMAT.md, docs/HF-SEMANTICS.md §4.3)."""

    def __init__(self, D, l):
        super().__init__()
        assert l.get("q_lora_rank", 0) == 0, "only q_lora_rank 0 is implemented"
        self.H = l["n_heads"]
        self.dc, self.dn = l["kv_lora_rank"], l["qk_nope_head_dim"]
        self.dr, self.dv = l["qk_rope_head_dim"], l["v_head_dim"]
        self.rope_dim = self.dr
        self.wq = nn.Linear(D, self.H * (self.dn + self.dr), bias=False)
        self.wkv_a = nn.Linear(D, self.dc + self.dr, bias=False)
        self.kv_a_norm = RMSNorm(self.dc, mixformat.MLA_INNER_NORM_EPS)
        self.w_uk = nn.Parameter(torch.empty(self.H, self.dn, self.dc))
        self.w_uv = nn.Parameter(torch.empty(self.H, self.dv, self.dc))
        self.wo = nn.Linear(self.H * self.dv, D, bias=False)

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        H, dc, dn, dr, dv = self.H, self.dc, self.dn, self.dr, self.dv
        q = self.wq(x).view(B, T, H, dn + dr).transpose(1, 2)
        q_nope, q_pe = q.split([dn, dr], dim=-1)
        c, k_pe = self.wkv_a(x).split([dc, dr], dim=-1)
        c = self.kv_a_norm(c)
        # per head [W_uk[h]; W_uv[h]] stacked = HF kv_b_proj [H*(dn+dv), dc]
        w_kvb = torch.cat((self.w_uk, self.w_uv), dim=1).reshape(H * (dn + dv), dc)
        kv = F.linear(c, w_kvb).view(B, T, H, dn + dv).transpose(1, 2)
        k_nope, v = kv.split([dn, dv], dim=-1)
        q_pe = apply_rope(q_pe, cos, sin)
        k_pe = apply_rope(k_pe.view(B, 1, T, dr), cos, sin)  # one rope key for all heads
        qh = torch.cat((q_nope, q_pe), dim=-1)
        kh = torch.cat((k_nope, k_pe.expand(B, H, T, dr)), dim=-1)
        y = F.scaled_dot_product_attention(qh, kh, v, is_causal=True, scale=(dn + dr) ** -0.5)
        return self.wo(y.transpose(1, 2).reshape(B, T, H * dv))


class Block(nn.Module):
    def __init__(self, cfg, l):
        super().__init__()
        D, I, eps = cfg["dim"], cfg["hidden_dim"], cfg["norm_eps"]
        self.attn_norm = RMSNorm(D, eps)
        self.attn = GQAAttention(D, l) if l["kind"] == "gqa" else MLAAttention(D, l)
        self.ffn_norm = RMSNorm(D, eps)
        self.w1 = nn.Linear(D, I, bias=False)
        self.w3 = nn.Linear(D, I, bias=False)
        self.w2 = nn.Linear(I, D, bias=False)

    def forward(self, x, cos, sin):
        h = x + self.attn(self.attn_norm(x), cos, sin)
        n = self.ffn_norm(h)
        return h + self.w2(F.silu(self.w1(n)) * self.w3(n))


class Decoder(nn.Module):
    def __init__(self, cfg, layers):
        super().__init__()
        assert cfg["tied"] and cfg["rope_pairing"] == "neox"
        self.cfg, self.layer_defs = cfg, layers
        self.tok_embeddings = nn.Embedding(cfg["vocab_size"], cfg["dim"])
        self.layers = nn.ModuleList([Block(cfg, l) for l in layers])
        self.norm = RMSNorm(cfg["dim"], cfg["norm_eps"])
        for r in sorted({b.attn.rope_dim for b in self.layers}):
            cos, sin = rope_tables(cfg["max_seq_len"], r, cfg["rope_theta"], None)
            self.register_buffer("rope_cos_%d" % r, cos, persistent=False)
            self.register_buffer("rope_sin_%d" % r, sin, persistent=False)

    def forward(self, idx):
        T = idx.shape[1]
        x = self.tok_embeddings(idx)
        for b in self.layers:
            r = b.attn.rope_dim
            x = b(x, getattr(self, "rope_cos_%d" % r)[:T], getattr(self, "rope_sin_%d" % r)[:T])
        return F.linear(self.norm(x), self.tok_embeddings.weight)


def format_name(pname):
    """PyTorch parameter name -> docs/FORMAT.md tensor name."""
    n = pname.replace(".attn.", ".")
    return n[:-len(".weight")] if n.endswith(".weight") else n


def init_weights(model, n_layers, std):
    out_std = std / math.sqrt(2 * n_layers)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.fill_(1.0)
            elif name.endswith("wo.weight") or name.endswith("w2.weight"):
                p.normal_(0.0, out_std)
            else:
                p.normal_(0.0, std)


def export_tensors(model):
    """FORMAT names -> float32 numpy arrays (on the CPU)."""
    return {format_name(n): p.detach().float().cpu().numpy().copy()
            for n, p in model.named_parameters()}


@torch.no_grad() if torch is not None else (lambda f: f)
def evaluate(model, windows, device, batch=64):
    """Sum of NLL (nats) and number of predicted tokens over the windows, fp32, no autocast."""
    model.eval()
    order = sorted(range(len(windows)), key=lambda i: -len(windows[i]))
    total, count = 0.0, 0
    with torch.autocast(device_type=device.type, enabled=False):
        for s in range(0, len(order), batch):
            ws = [windows[i] for i in order[s:s + batch]]
            L = max(len(w) for w in ws) - 1
            x = torch.zeros(len(ws), L, dtype=torch.long)
            y = torch.full((len(ws), L), -100, dtype=torch.long)
            for j, w in enumerate(ws):
                m = len(w) - 1
                x[j, :m] = torch.tensor(w[:-1])
                y[j, :m] = torch.tensor(w[1:])
            logits = model(x.to(device)).float()
            nll = F.cross_entropy(logits.view(-1, logits.shape[-1]), y.to(device).view(-1),
                                  ignore_index=-100, reduction="sum")
            total += float(nll.double().item())
            count += int((y != -100).sum().item())
    return total, count


# ----------------------------------------------------------------------------
# Hugging Face export (numpy only, so that it can be rebuilt from a .bin)

def hf_config(arch, cfg, layers):
    l0 = layers[0]
    if any(l != l0 for l in layers):
        raise ValueError("an HF export needs identical layers")
    common = {
        "architectures": [arch],
        "vocab_size": cfg["vocab_size"],
        "hidden_size": cfg["dim"],
        "intermediate_size": cfg["hidden_dim"],
        "num_hidden_layers": cfg["n_layers"],
        "num_attention_heads": l0["n_heads"],
        "hidden_act": "silu",
        "max_position_embeddings": cfg["max_seq_len"],
        "rms_norm_eps": cfg["norm_eps"],
        "rope_theta": cfg["rope_theta"],
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg["rope_theta"]},
        "attention_bias": False,
        "attention_dropout": 0.0,
        "tie_word_embeddings": bool(cfg["tied"]),
        "bos_token_id": cfg["bos_id"],
        "eos_token_id": cfg["eos_id"],
        "initializer_range": 0.02,
        "use_cache": True,
        "dtype": "bfloat16",
    }
    if arch == "LlamaForCausalLM":
        assert l0["kind"] == "gqa"
        common.update({
            "model_type": "llama",
            "num_key_value_heads": l0["n_kv_heads"],
            "head_dim": l0["head_dim"],
            "mlp_bias": False,
            "pretraining_tp": 1,
        })
    elif arch == "DeepseekV3ForCausalLM":
        assert l0["kind"] == "mla" and l0.get("q_lora_rank", 0) == 0
        L = cfg["n_layers"]
        common.update({
            "model_type": "deepseek_v3",
            "num_key_value_heads": l0["n_heads"],
            "q_lora_rank": None,
            "kv_lora_rank": l0["kv_lora_rank"],
            "qk_nope_head_dim": l0["qk_nope_head_dim"],
            "qk_rope_head_dim": l0["qk_rope_head_dim"],
            "v_head_dim": l0["v_head_dim"],
            "rope_interleave": False,  # our MLA rope is the neox pairing
            # all layers dense: the MoE fields are never used
            "first_k_dense_replace": L,
            "n_routed_experts": 1,
            "n_shared_experts": 1,
            "num_experts_per_tok": 1,
            "n_group": 1,
            "topk_group": 1,
            "moe_intermediate_size": cfg["hidden_dim"],
            "routed_scaling_factor": 1.0,
            "norm_topk_prob": True,
        })
    else:
        raise ValueError("unknown HF architecture %s" % arch)
    return common


def hf_arrays(arch, cfg, layers, t):
    """FORMAT tensors -> HF safetensors names (no permutation: our neox RoPE on the raw
    weights is HF's rotate_half)."""
    out = {"model.embed_tokens.weight": t["tok_embeddings"], "model.norm.weight": t["norm"]}
    if not cfg["tied"]:
        out["lm_head.weight"] = t["output"]
    for i, l in enumerate(layers):
        p, q = "model.layers.%d." % i, "layers.%d." % i
        out[p + "input_layernorm.weight"] = t[q + "attn_norm"]
        out[p + "post_attention_layernorm.weight"] = t[q + "ffn_norm"]
        out[p + "mlp.gate_proj.weight"] = t[q + "w1"]
        out[p + "mlp.up_proj.weight"] = t[q + "w3"]
        out[p + "mlp.down_proj.weight"] = t[q + "w2"]
        a = p + "self_attn."
        if arch == "LlamaForCausalLM":
            for src, dst in (("wq", "q_proj"), ("wk", "k_proj"), ("wv", "v_proj"), ("wo", "o_proj")):
                out[a + dst + ".weight"] = t[q + src]
        else:
            H, dc = l["n_heads"], l["kv_lora_rank"]
            dn, dv = l["qk_nope_head_dim"], l["v_head_dim"]
            out[a + "q_proj.weight"] = t[q + "wq"]
            out[a + "kv_a_proj_with_mqa.weight"] = t[q + "wkv_a"]
            out[a + "kv_a_layernorm.weight"] = t[q + "kv_a_norm"]
            kvb = np.concatenate([t[q + "w_uk"], t[q + "w_uv"]], axis=1)  # [H, dn+dv, dc]
            out[a + "kv_b_proj.weight"] = kvb.reshape(H * (dn + dv), dc)
            out[a + "o_proj.weight"] = t[q + "wo"]
    return out


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_hf_folder(folder, arch, cfg, layers, tensors, tokenizer_bytes):
    """Writes config.json, model.safetensors (bf16), tokenizer.model, tokenizer_config.json.
    Returns {file: sha256}."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        f.write(json.dumps(hf_config(arch, cfg, layers), indent=2, sort_keys=True) + "\n")
    arrays = hf_arrays(arch, cfg, layers, tensors)  # name -> float32, stored as BF16
    safetensors_np.save_file(arrays, os.path.join(folder, "model.safetensors"),
                             dtypes={name: "BF16" for name in arrays}, metadata={"format": "pt"})
    with open(os.path.join(folder, "tokenizer.model"), "wb") as f:
        f.write(tokenizer_bytes)
    tok_cfg = {"tokenizer_class": "LlamaTokenizer", "unk_token": "<unk>", "bos_token": "<s>",
               "eos_token": "</s>", "add_bos_token": True, "add_eos_token": False,
               "model_max_length": cfg["max_seq_len"], "clean_up_tokenization_spaces": False,
               "legacy": False}
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        f.write(json.dumps(tok_cfg, indent=2, sort_keys=True) + "\n")
    names = ["config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json"]
    return {n: sha256(os.path.join(folder, n)) for n in names}


def hf_from_bin(outdir, defs):
    """Rebuild the HF folders from OUT/NAME.bin (numpy only) and compare with hf_check.json."""
    check_path = os.path.join(outdir, "hf_check.json")
    recorded = {}
    if os.path.exists(check_path):
        with open(check_path) as f:
            recorded = json.load(f)
    bad = 0
    done = 0
    for name, spec in defs["models"].items():
        arch = spec.get("hf")
        path = os.path.join(outdir, name + ".bin")
        if not arch or not os.path.exists(path):
            continue
        cfg_bin, layers_bin, tensors, tok = mixformat.read_model(path)
        layers = spec["layers"]
        for lb, l in zip(layers_bin, layers):
            for k, v in l.items():
                if lb.get(k) != v:
                    raise SystemExit("%s: layer %s=%r differs from models.json %r" % (path, k, lb.get(k), v))
        folder = os.path.join(outdir, HF_DIRS[arch])
        sums = write_hf_folder(folder, arch, defs["config"], layers, tensors, tok)
        want = recorded.get(name, {}).get("files", {})
        for fn, s in sums.items():
            w = want.get(fn)
            status = "no record" if w is None else ("same" if w == s else "DIFFERENT")
            if w is not None and w != s:
                bad += 1
            log("%s/%s sha256 %s (%s)" % (HF_DIRS[arch], fn, s[:16], status))
        done += 1
    if not done:
        raise SystemExit("no .bin of an HF-exported model in %s" % outdir)
    if bad:
        raise SystemExit("%d HF file(s) differ from the GPU run's" % bad)


# ----------------------------------------------------------------------------
# Hugging Face check (on the GPU machine, transformers installed)

def hf_check(name, arch, folder, cfg, layers, ref_model, ids):
    import transformers
    res = {"arch": arch, "transformers": transformers.__version__, "problems": []}
    probs = res["problems"]
    cls = getattr(transformers, arch)
    kw = dict(dtype=torch.float32, attn_implementation="eager")
    try:
        m, info = cls.from_pretrained(folder, output_loading_info=True, **kw)
    except TypeError:
        m, info = cls.from_pretrained(folder, **kw), {}
    m.eval()
    for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        got = info.get(k) if isinstance(info, dict) else getattr(info, k, None)
        v = sorted(str(x) for x in (got or []))
        if k == "missing_keys":
            v = [x for x in v if x != "lm_head.weight"]
        if v:
            probs.append("%s: %s" % (k, v[:5]))
    if any(p.dtype != torch.float32 for p in m.parameters()):
        probs.append("parameters are not float32")
    c = m.config
    l0 = layers[0]
    if c.num_hidden_layers != cfg["n_layers"] or c.vocab_size != cfg["vocab_size"]:
        probs.append("layers/vocab mismatch")
    if abs(c.rms_norm_eps - cfg["norm_eps"]) > 1e-12:
        probs.append("rms_norm_eps %r" % c.rms_norm_eps)
    rp = getattr(c, "rope_parameters", None) or {}
    theta = rp.get("rope_theta", getattr(c, "rope_theta", None))
    if theta != cfg["rope_theta"]:
        probs.append("rope_theta %r" % theta)
    if rp.get("rope_type", "default") != "default":
        probs.append("rope_type %r" % rp.get("rope_type"))
    rot = m.model.rotary_emb
    if float(getattr(rot, "attention_scaling", 1.0)) != 1.0:
        probs.append("rotary attention_scaling %r" % rot.attention_scaling)
    r = l0["head_dim"] if l0["kind"] == "gqa" else l0["qk_rope_head_dim"]
    ours_inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, r, 2, dtype=torch.int64).float() / r))
    if rot.inv_freq.numel() != r // 2:
        probs.append("inv_freq has %d values, expected %d" % (rot.inv_freq.numel(), r // 2))
    else:
        rel = float(((rot.inv_freq.float().cpu() - ours_inv).abs() / ours_inv).max())
        res["inv_freq_max_rel_diff"] = rel
        if rel > 1e-6:
            probs.append("inv_freq differs (max rel %.3g)" % rel)
    if not c.tie_word_embeddings or not torch.equal(m.lm_head.weight, m.model.embed_tokens.weight):
        probs.append("embeddings not tied")
    if arch == "LlamaForCausalLM":
        if c.num_key_value_heads != l0["n_kv_heads"] or c.head_dim != l0["head_dim"]:
            probs.append("num_key_value_heads/head_dim %r/%r" % (c.num_key_value_heads, c.head_dim))
        for i, lay in enumerate(m.model.layers):
            if abs(lay.self_attn.scaling - l0["head_dim"] ** -0.5) > 1e-12:
                probs.append("layer %d scaling %r" % (i, lay.self_attn.scaling))
    else:
        dn, dr = l0["qk_nope_head_dim"], l0["qk_rope_head_dim"]
        if c.rope_interleave is not False:
            probs.append("rope_interleave is %r" % c.rope_interleave)
        if c.q_lora_rank is not None:
            probs.append("q_lora_rank is %r" % c.q_lora_rank)
        if (c.kv_lora_rank, c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim) != \
                (l0["kv_lora_rank"], dn, dr, l0["v_head_dim"]):
            probs.append("MLA sizes differ")
        if c.num_key_value_heads != l0["n_heads"]:
            probs.append("num_key_value_heads %r" % c.num_key_value_heads)
        for i, lay in enumerate(m.model.layers):
            mlp = lay.mlp
            if hasattr(mlp, "experts") or hasattr(mlp, "gate") or not hasattr(mlp, "gate_proj"):
                probs.append("layer %d is not dense (%s)" % (i, type(mlp).__name__))
            if abs(lay.self_attn.scaling - (dn + dr) ** -0.5) > 1e-12:
                probs.append("layer %d scaling %r" % (i, lay.self_attn.scaling))
    x = torch.tensor([ids], dtype=torch.long)
    with torch.no_grad():
        hf_logits = m(input_ids=x).logits[0].float()
        our_logits = ref_model(x)[0].float()
    diff = float((hf_logits - our_logits).abs().max())
    res.update({"n_tokens": len(ids), "max_abs_diff": diff,
                "max_abs_logit": float(our_logits.abs().max()), "tolerance": HF_TOL})
    if not diff < HF_TOL:
        probs.append("max |logits diff| %.3g >= %g" % (diff, HF_TOL))
    # informational: does transformers' tokenizer reproduce sentencepiece's ids?
    try:
        tok = transformers.AutoTokenizer.from_pretrained(folder)
        res["hf_tokenizer_matches_first_story"] = None
        res["_tokenizer"] = tok
    except Exception as e:  # noqa: BLE001
        res["hf_tokenizer_error"] = "%s: %s" % (type(e).__name__, str(e)[:200])
    res["ok"] = not probs
    return res


# ----------------------------------------------------------------------------
# training

def lr_at(step, steps, peak, warmup, min_ratio):
    if step < warmup:
        return peak * (step + 1) / warmup
    p = (step - warmup) / max(1, steps - 1 - warmup)
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


def kv_floats_per_token(layers):
    n = 0
    for l in layers:
        if l["kind"] == "gqa":
            n += 2 * l["n_kv_heads"] * l["head_dim"]
        else:
            n += l["kv_lora_rank"] + l["qk_rope_head_dim"]
    return n


def train_model(name, spec, defs, data, offsets, valid, args, device, tok_bytes, sp, outdir):
    cfg = dict(defs["config"])
    layers = spec["layers"]
    tr = defs["training"]
    B, T = tr["batch_size"], tr["seq_len"]
    steps = offsets.shape[0]
    torch.manual_seed(args.seed)
    model = Decoder(cfg, layers).to(device)
    init_weights(model, cfg["n_layers"], tr["init_std"])
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": tr["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=tr["lr"], betas=tuple(tr["betas"]), eps=1e-8,
                            fused=(device.type == "cuda"))
    fwd = torch.compile(model) if args.compile else model
    amp = device.type == "cuda"
    V = cfg["vocab_size"]
    ar = torch.arange(T + 1, device=device)
    offs = offsets.to(device)
    losses = torch.zeros(steps, device=device)
    log("== %s: %d params, %d steps x %d x %d = %d tokens, kv cache %d floats/token"
        % (name, n_params, steps, B, T, steps * B * T, kv_floats_per_token(layers)))
    model.train()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.time()
    t_steady, steady_from = None, min(10, max(0, steps - 1))
    last_t, last_step = t0, 0
    for step in range(steps):
        if step == steady_from:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t_steady = time.time()
        lr = lr_at(step, steps, tr["lr"], tr["warmup_steps"], tr["min_lr_ratio"])
        for g in opt.param_groups:
            g["lr"] = lr
        chunk = data[offs[step][:, None] + ar]
        x, y = chunk[:, :-1], chunk[:, 1:]
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            logits = fwd(x)
        loss = F.cross_entropy(logits.float().view(-1, V), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tr["grad_clip"])
        opt.step()
        losses[step] = loss.detach()
        if (step + 1) % args.log_every == 0 or step + 1 == steps:
            lv = float(losses[step].item())  # syncs
            now = time.time()
            tps = (step + 1 - last_step) * B * T / max(now - last_t, 1e-9)
            log("%s step %d/%d loss %.4f lr %.2e tok/s %.0f elapsed %.1fs"
                % (name, step + 1, steps, lv, lr, tps, now - t0))
            last_t, last_step = now, step + 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    t1 = time.time()
    wall = t1 - t0
    steady_tps = ((steps - steady_from) * B * T / (t1 - t_steady)) if t_steady and steps > steady_from else None
    lh = losses.cpu().numpy().astype(np.float64)
    tail = max(1, steps // 20)
    final_loss = float(lh[-tail:].mean())

    # validation on the trained weights, then on the bf16-rounded ones (the export)
    nll_raw, _ = evaluate(model, valid["windows"], device, args.eval_batch)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.bfloat16().float())
    nll, ntok = evaluate(model, valid["windows"], device, args.eval_batch)
    vloss = nll / ntok
    bpb = nll / math.log(2) / valid["bytes"]
    log("%s valid loss %.5f nats/token (unrounded %.5f), ppl %.3f, bits/byte %.5f, %d tokens"
        % (name, vloss, nll_raw / ntok, math.exp(vloss), bpb, ntok))

    tensors = export_tensors(model)
    mixformat.write_model(os.path.join(outdir, name + ".bin"), cfg, layers, tensors,
                          tokenizer_bytes=tok_bytes, dtype="bf16")

    # fp32 reference copy on the CPU (exported weights) for ref.json and the HF check
    ref = Decoder(cfg, layers)
    ref.load_state_dict({k: v.detach().cpu() for k, v in model.state_dict().items()})
    ref.eval()
    story0 = valid["seqs"][0]
    ids64 = story0[:64]
    with torch.no_grad():
        lg = ref(torch.tensor([ids64]))[0, :8].float().numpy()
    s0_nll, s0_n = evaluate(ref, eval_windows([story0], cfg["max_seq_len"]), torch.device("cpu"))
    with open(os.path.join(outdir, name + ".ref.json"), "w") as f:
        json.dump({"model": name, "story": 0, "n_tokens_story": len(story0), "ids": ids64,
                   "positions": 8, "vocab_size": V,
                   "logits": [[float("%.9g" % v) for v in row] for row in lg],
                   "story_nll_sum": s0_nll, "story_predicted_tokens": s0_n,
                   "story_loss": s0_nll / s0_n,
                   "note": "fp32 logits of the exported (bf16-rounded) weights, ids fed at "
                           "positions 0..63; story_* = the validation-loss definition on story 0 alone"},
                  f)
    result = {
        "name": name,
        "config": cfg,
        "layers": layers,
        "params": n_params,
        "params_non_embedding": n_params - cfg["vocab_size"] * cfg["dim"],
        "kv_cache_floats_per_token": kv_floats_per_token(layers),
        "train": {
            "tokens": steps * B * T, "steps": steps, "batch_size": B, "seq_len": T,
            "train_tokens_in_data": int(data.numel()),
            "epochs": steps * B * T / data.numel(),
            "lr": tr["lr"], "warmup_steps": tr["warmup_steps"], "min_lr_ratio": tr["min_lr_ratio"],
            "betas": tr["betas"], "weight_decay": tr["weight_decay"], "grad_clip": tr["grad_clip"],
            "init_std": tr["init_std"], "seed": args.seed, "compile": bool(args.compile),
            "wall_s": wall, "tokens_per_s": steps * B * T / wall, "tokens_per_s_steady": steady_tps,
            "final_train_loss": final_loss, "final_train_loss_steps": tail,
            "last_step_loss": float(lh[-1]),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__,
        },
        "valid": {
            "loss": vloss, "loss_unrounded": nll_raw / ntok, "ppl": math.exp(vloss),
            "bits_per_byte": bpb, "nll_sum": nll, "tokens": ntok, "bytes": valid["bytes"],
            "stories": len(valid["seqs"]), "windows": len(valid["windows"]),
            "weights": "bf16-rounded (as exported)",
        },
    }
    hf = None
    arch = spec.get("hf")
    if arch and not args.skip_hf:
        folder = os.path.join(outdir, HF_DIRS[arch])
        files = write_hf_folder(folder, arch, cfg, layers, tensors, tok_bytes)
        ids = story0[:cfg["max_seq_len"]]
        t_hf = time.time()
        try:
            hf = hf_check(name, arch, folder, cfg, layers, ref, ids)
        except Exception as e:  # noqa: BLE001  (recorded, and the run exits non-zero at the end)
            import traceback
            traceback.print_exc()
            hf = {"arch": arch, "ok": False, "max_abs_diff": None, "n_tokens": len(ids),
                  "max_abs_logit": None, "problems": ["%s: %s" % (type(e).__name__, str(e)[:500])]}
        tok = hf.pop("_tokenizer", None)
        if tok is not None:
            try:
                text = valid["texts"][0]
                got = list(tok(text)["input_ids"])
                hf["hf_tokenizer_matches_first_story"] = got == [cfg["bos_id"]] + sp.encode(text, out_type=int)
            except Exception as e:  # noqa: BLE001
                hf["hf_tokenizer_error"] = "%s: %s" % (type(e).__name__, str(e)[:200])
        hf["files"] = files
        hf["folder"] = HF_DIRS[arch]
        hf["seconds"] = time.time() - t_hf
        log("%s HF check (%s): max |logits - ours| = %s over %d tokens (max |logit| %s) -> %s%s"
            % (name, arch, hf["max_abs_diff"], hf["n_tokens"], hf["max_abs_logit"],
               "OK" if hf["ok"] else "FAILED", "" if hf["ok"] else ": " + "; ".join(hf["problems"])))
        result["hf_check"] = {k: hf[k] for k in ("arch", "ok", "max_abs_diff", "n_tokens")}
    result["export_s"] = time.time() - t1
    with open(os.path.join(outdir, name + ".json"), "w") as f:
        json.dump(result, f, indent=2)
    del model, opt, fwd
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result, hf


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="folder with train.txt and valid.txt")
    ap.add_argument("--tokenizer", default="weights/tokenizer.model")
    ap.add_argument("--out", help="output folder")
    ap.add_argument("--models", default=None, help="comma-separated names from models.json (default: all)")
    ap.add_argument("--tokens", type=int, default=None, help="training tokens per model (default: models.json)")
    ap.add_argument("--steps", type=int, default=None, help="override the step count (smoke tests)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--compile", action="store_true", help="torch.compile the model for training")
    ap.add_argument("--skip-hf", action="store_true", help="no HF export/check")
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--eval-batch", type=int, default=64)
    ap.add_argument("--models-json", default=MODELS_JSON)
    ap.add_argument("--hf-from-bin", metavar="OUTDIR",
                    help="numpy only: rebuild OUTDIR/hf_* from OUTDIR/*.bin and compare sha256")
    args = ap.parse_args()
    defs = load_defs(args.models_json)
    if args.hf_from_bin:
        hf_from_bin(args.hf_from_bin, defs)
        return
    if torch is None:
        raise SystemExit("training needs PyTorch")
    if not args.data or not args.out:
        ap.error("--data and --out are required")
    import sentencepiece as spm

    t_start = time.time()
    tr = defs["training"]
    cfg = defs["config"]
    if args.seed is None:
        args.seed = tr["seed"]
    names = args.models.split(",") if args.models else list(defs["models"])
    for n in names:
        if n not in defs["models"]:
            raise SystemExit("unknown model %r (models.json has %s)" % (n, ", ".join(defs["models"])))
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.set_float32_matmul_precision("highest")  # no TF32 anywhere fp32 is used
    os.makedirs(args.out, exist_ok=True)

    with open(args.tokenizer, "rb") as f:
        tok_bytes = f.read()
    sp = spm.SentencePieceProcessor(model_proto=tok_bytes)
    if sp.get_piece_size() != cfg["vocab_size"]:
        raise SystemExit("tokenizer has %d pieces, models.json says %d" % (sp.get_piece_size(), cfg["vocab_size"]))
    if sp.bos_id() != cfg["bos_id"] or sp.eos_id() != cfg["eos_id"]:
        raise SystemExit("tokenizer bos/eos %d/%d, expected %d/%d" % (sp.bos_id(), sp.eos_id(), cfg["bos_id"], cfg["eos_id"]))
    if [sp.id_to_piece(i) for i in range(3)] != ["<unk>", "<s>", "</s>"]:
        log("warning: pieces 0..2 are %r; the HF tokenizer_config.json assumes <unk> <s> </s>"
            % [sp.id_to_piece(i) for i in range(3)])

    t = time.time()
    train_stories = read_stories(os.path.join(args.data, "train.txt"))
    valid_texts = read_stories(os.path.join(args.data, "valid.txt"))
    train_seqs = encode_stories(sp, train_stories, cfg["bos_id"], cfg["eos_id"])
    valid_seqs = encode_stories(sp, valid_texts, cfg["bos_id"], cfg["eos_id"])
    data_np = np.fromiter((i for s in train_seqs for i in s), dtype=np.int64,
                          count=sum(len(s) for s in train_seqs))
    data = torch.from_numpy(data_np).to(device)
    valid = {"seqs": valid_seqs, "texts": valid_texts,
             "windows": eval_windows(valid_seqs, cfg["max_seq_len"]),
             "bytes": sum(len(s.encode("utf-8")) for s in valid_texts)}
    log("data: %d train stories, %d tokens; %d valid stories, %d tokens to predict, %d bytes; %.1fs"
        % (len(train_stories), data.numel(), len(valid_texts), sum(len(s) - 1 for s in valid_seqs),
           valid["bytes"], time.time() - t))

    B, T = tr["batch_size"], tr["seq_len"]
    if T != cfg["max_seq_len"]:
        raise SystemExit("training seq_len must equal max_seq_len")
    if args.steps is not None:
        steps = args.steps
    else:
        tokens = args.tokens if args.tokens is not None else tr["tokens"]
        steps = max(1, tokens // (B * T))
    # the same random blocks (inputs T, targets shifted) for every model
    g = torch.Generator().manual_seed(args.seed)
    offsets = torch.randint(0, data.numel() - (T + 1) + 1, (steps, B), generator=g)
    log("budget: %d steps x %d x %d = %d tokens per model (%.2f epochs), models %s, device %s%s"
        % (steps, B, T, steps * B * T, steps * B * T / data.numel(), ",".join(names), device,
           " (%s)" % torch.cuda.get_device_name(device) if device.type == "cuda" else ""))

    results, checks, failed = {}, {}, []
    check_path = os.path.join(args.out, "hf_check.json")
    for n in names:
        r, hf = train_model(n, defs["models"][n], defs, data, offsets, valid, args, device,
                            tok_bytes, sp, args.out)
        results[n] = r
        if hf is not None:
            checks[n] = hf
            if not hf["ok"]:
                failed.append(n)
            with open(check_path, "w") as f:
                json.dump(checks, f, indent=2)
    summary = {"total_wall_s": time.time() - t_start, "models": {
        n: {"valid_loss": r["valid"]["loss"], "bits_per_byte": r["valid"]["bits_per_byte"],
            "final_train_loss": r["train"]["final_train_loss"], "params": r["params"],
            "kv_cache_floats_per_token": r["kv_cache_floats_per_token"],
            "tokens_per_s": r["train"]["tokens_per_s"], "wall_s": r["train"]["wall_s"]}
        for n, r in results.items()}}
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    log("summary:")
    for n, s in summary["models"].items():
        log("  %-7s valid %.4f nats/token  %.4f bits/byte  train %.4f  %d params  kv %d floats/token  %.0f tok/s  %.1fs"
            % (n, s["valid_loss"], s["bits_per_byte"], s["final_train_loss"], s["params"],
               s["kv_cache_floats_per_token"], s["tokens_per_s"], s["wall_s"]))
    log("total %.1fs" % summary["total_wall_s"])
    if failed:
        raise SystemExit("HF CHECK FAILED for %s (see %s)" % (", ".join(failed), check_path))


if __name__ == "__main__":
    main()
