"""The shipped models (weights/*.bin): they load, they compute what PyTorch computed
when it trained them, their perplexity has not regressed, and generation is
deterministic. Reference numbers come from scripts/train.py (PyTorch, on the GPU
machine): weights/training/*.json and reference_logits.json."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

import numpy as np

from tests.python import util

WEIGHTS = os.path.join(util.ROOT, "weights")
TRAINING = os.path.join(WEIGHTS, "training")
EVAL_TEXT = os.path.join(WEIGHTS, "eval_stories.txt")
VALID_TEXT = os.path.join(util.ROOT, "..", "shared", "data", "tinystories", "valid.txt")
MODELS = ["mha", "gqa", "mqa", "mla", "hybrid"]
DEFAULT = "gqa"

# Regression guard for --ppl on the committed 100-story sample: the nll measured when
# the models were shipped (mha 1.9699, gqa 1.9865, mqa 2.0035, mla 2.0119,
# hybrid 2.0156 nats/token) plus 1%. The runtime is deterministic up to float
# summation order, so a real regression (a wrong kernel, a broken export) shows up
# as far more than 1%.
EVAL_NLL_BOUND = {"mha": 1.990, "gqa": 2.007, "mqa": 2.024, "mla": 2.032, "hybrid": 2.036}


def ppl(model, text, extra=()):
    out = util.run_cli([model, "--ppl", text] + list(extra), timeout=900)
    return {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", out)}


class ShippedModels(unittest.TestCase):
    def setUp(self):
        util.require_run()
        with open(os.path.join(util.SCRIPTS, "models.json")) as f:
            self.spec = json.load(f)

    def test_load_and_layout(self):
        for name in MODELS:
            with self.subTest(model=name):
                path = os.path.join(WEIGHTS, name + ".bin")
                info = util.info(path)
                with open(os.path.join(TRAINING, name + ".json")) as f:
                    trained = json.load(f)
                self.assertEqual(info["n_params"], trained["params"])
                self.assertTrue(info["tokenizer_embedded"])
                layers = self.spec["models"][name]["layers"]
                self.assertEqual(len(info["layers"]), len(layers))
                want_bytes = 0
                for got, want in zip(info["layers"], layers):
                    if want["kind"] == "mla":
                        self.assertEqual(got["kind"], "mla")
                        b = (want["kv_lora_rank"] + want["qk_rope_head_dim"]) * 4
                    else:
                        h, hkv = want["n_heads"], want["n_kv_heads"]
                        self.assertEqual(got["kind"], "mha" if hkv == h else "mqa" if hkv == 1 else "gqa")
                        b = 2 * hkv * want["head_dim"] * 4
                    self.assertEqual(got["kv_bytes_per_token"], b)
                    want_bytes += b
                self.assertEqual(info["kv_bytes_per_token"], want_bytes)
                kinds = [l["kind"] for l in info["layers"]]
                self.assertEqual(info["attention"], "%s x%d" % (kinds[0], len(kinds)) if len(set(kinds)) == 1
                                 else ", ".join(kinds))

    def test_logits_match_pytorch(self):
        with open(os.path.join(TRAINING, "reference_logits.json")) as f:
            refs = json.load(f)
        with tempfile.TemporaryDirectory() as tmp:
            for name in MODELS:
                ref = refs[name]
                want = np.array(ref["logits"])
                ids = ref["ids"]
                for mode in ("absorbed", "naive"):
                    with self.subTest(model=name, mla=mode):
                        got = util.dump_logits(os.path.join(WEIGHTS, name + ".bin"), ids, 4096,
                                               os.path.join(tmp, "l.f32"), ["--mla", mode])
                        got = got[:ref["n_positions"], ref["vocab_idx"]]
                        self.assertLess(np.abs(got - want).max(), 1e-4)

    def test_eval_perplexity_regression(self):
        for name in MODELS:
            with self.subTest(model=name):
                r = ppl(os.path.join(WEIGHTS, name + ".bin"), EVAL_TEXT)
                self.assertEqual(r["stories"], 100)
                self.assertLess(r["nll"], EVAL_NLL_BOUND[name])
                self.assertAlmostEqual(r["ppl"], np.exp(r["nll"]), delta=1e-3 * r["ppl"])

    @unittest.skipUnless(os.path.exists(VALID_TEXT), "../shared/data/tinystories/valid.txt not present")
    def test_runtime_loss_equals_pytorch_validation_loss(self):
        """./run --ppl on the full validation set reproduces the loss PyTorch reported
        for the same bf16 weights (the issue asks for 1%; it agrees to ~1e-5)."""
        for name in MODELS:
            with self.subTest(model=name):
                with open(os.path.join(TRAINING, name + ".json")) as f:
                    trained = json.load(f)
                r = ppl(os.path.join(WEIGHTS, name + ".bin"), VALID_TEXT)
                self.assertEqual(int(r["tokens"]), trained["valid"]["tokens"])
                self.assertLess(abs(r["nll"] - trained["valid"]["loss"]), 1e-3 * trained["valid"]["loss"])

    def test_default_greedy_is_deterministic(self):
        model = os.path.join(WEIGHTS, DEFAULT + ".bin")
        runs = []
        for threads, seed in (("1", "1"), ("2", "2"), ("2", "3")):
            p = subprocess.run([util.RUN, model, "-p", "Once upon a time", "-n", "60", "-t", "0",
                                "-s", seed, "--threads", threads], capture_output=True, text=True)
            self.assertEqual(p.returncode, 0, p.stderr)
            runs.append(p.stdout)
        self.assertTrue(runs[0].startswith("Once upon a time"))
        self.assertGreater(len(runs[0].split()), 30)
        self.assertEqual(runs[0], runs[1])
        self.assertEqual(runs[0], runs[2])


class HuggingFaceExports(unittest.TestCase):
    def test_convert_hf_exports_of_trained_models(self):
        """The gqa and mla models as Hugging Face folders (LlamaForCausalLM and
        DeepseekV3ForCausalLM), rebuilt with numpy and checked byte for byte against the
        folders that transformers loaded on the GPU machine (hf_check.json: max |HF -
        PyTorch| 1.4e-5 and 1.7e-5), then converted back with convert_hf.py: ./run on
        the converted files must give PyTorch's logits."""
        with open(os.path.join(TRAINING, "reference_logits.json")) as f:
            refs = json.load(f)
        with open(os.path.join(TRAINING, "hf_check.json")) as f:
            self.assertTrue(all(v["ok"] for v in json.load(f).values()))
        with tempfile.TemporaryDirectory() as tmp:
            for name in ("gqa.bin", "mla.bin"):
                shutil.copy(os.path.join(WEIGHTS, name), tmp)
            shutil.copy(os.path.join(TRAINING, "hf_check.json"), tmp)
            p = subprocess.run([sys.executable, os.path.join(util.SCRIPTS, "train.py"), "--hf-from-bin", tmp],
                               capture_output=True, text=True)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            for folder, name in (("hf_llama", "gqa"), ("hf_deepseek", "mla")):
                out = util.convert(os.path.join(tmp, folder), os.path.join(tmp, name + "_hf.bin"))
                ref = refs[name]
                got = util.dump_logits(out, ref["ids"], 4096, os.path.join(tmp, "l.f32"))
                got = got[:ref["n_positions"], ref["vocab_idx"]]
                self.assertLess(np.abs(got - np.array(ref["logits"])).max(), 1e-4, folder)


class PerplexityErrors(unittest.TestCase):
    def run_err(self, args):
        util.require_run()
        p = subprocess.run([util.RUN] + args, capture_output=True, text=True)
        self.assertGreater(p.returncode, 0)
        lines = p.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, p.stderr)
        self.assertTrue(lines[0].startswith("run: error:"), lines[0])
        return lines[0]

    def test_only_separators(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "seps.txt")
            with open(path, "w") as f:
                f.write("<|endoftext|>\n\n  \n<|endoftext|>\n")
            self.assertIn("no text", self.run_err([os.path.join(WEIGHTS, DEFAULT + ".bin"), "--ppl", path]))

    def test_directory(self):
        with tempfile.TemporaryDirectory() as tmp:
            self.run_err([os.path.join(WEIGHTS, DEFAULT + ".bin"), "--ppl", tmp])


if __name__ == "__main__":
    unittest.main()
