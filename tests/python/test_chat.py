"""Chat templates: compiled by scripts/chat_template.py, rendered by ./run.

  * Every family's template compiles, and the structure says what the template does
    (default system prompts, date fields, which system messages are accepted, which
    content the template inspects, the end-of-turn token).
  * ./run --render-chat gives, byte for byte, the text jinja2 gives (configured as
    transformers configures it; committed in tests/fixtures/chat/reference_text.json by
    scripts/make_chat_references.py), on ten conversations per family (system or not,
    multi-turn, unicode, whitespace, empty content, literal special tokens, thinking,
    mid-conversation system, out-of-order roles, trailing assistant), and refuses,
    with one error line, exactly the conversations the verified structure does not
    cover. jinja2 (when importable) still renders the committed texts.
  * Templates the structure cannot express are refused at conversion; bad messages
    files, bad compiled templates and bad dates give one error line.

Templates of ../shared/data/tokenizers are read from there (skipped with a message
when absent); the others are in tests/fixtures/chat/templates.json with their sources.
"""
import datetime
import json
import os
import subprocess
import sys
import tempfile
import unittest

from tests.python import util  # also puts scripts/ on sys.path

import chat_template as ct  # noqa: E402

FIX = os.path.join(util.FIXTURES, "chat")
SHARED = os.path.join(util.ROOT, "..", "shared", "data", "tokenizers")
SCRIPT = os.path.join(util.SCRIPTS, "chat_template.py")

with open(os.path.join(FIX, "templates.json"), encoding="utf-8") as f:
    FIXTURE_TEMPLATES = {t["name"]: t for t in json.load(f)["templates"]}
with open(os.path.join(FIX, "reference_text.json"), encoding="utf-8") as f:
    REFERENCE = json.load(f)


def family_config(name):
    """tokenizer_config-like dict of a family, or None when its template is unavailable."""
    if name in FIXTURE_TEMPLATES:
        t = FIXTURE_TEMPLATES[name]
        return dict(chat_template=t["chat_template"], bos_token=t["bos_token"],
                    eos_token=t["eos_token"])
    p = os.path.join(SHARED, name, "tokenizer_config.json")
    if not os.path.exists(p):
        return None
    with open(p, encoding="utf-8") as f:
        return json.load(f)


def run(args):
    util.require_run()
    return subprocess.run([util.RUN] + [str(a) for a in args], capture_output=True, timeout=60)


class CompileTest(unittest.TestCase):
    def compiled(self, name):
        cfg = family_config(name)
        if cfg is None:
            self.skipTest("../shared/data/tokenizers/%s is absent" % name)
        return ct.compile_from_config(cfg)

    def test_llama3_family(self):
        s = self.compiled("llama3.2")
        self.assertIn(ct.DATE_OPEN + "%d %b %Y" + ct.DATE_CLOSE, s["system_first"]["prefix"])
        self.assertIn(ct.DATE_OPEN, s["no_system"])  # the date block even without a system message
        self.assertTrue(s["content"]["user"]["strip"])  # message['content'] | trim
        self.assertEqual(s["end_of_turn"], "<|eot_id|>")
        s = self.compiled("llama3.1")
        self.assertIn("Today Date: 26 Jul 2024", s["no_system"])  # 3.1 writes a fixed date
        s = self.compiled("llama3-8b-instruct")
        self.assertEqual(s["no_system"], "<|begin_of_text|>")
        self.assertEqual(s["generation"], "<|start_header_id|>assistant<|end_header_id|>\n\n")

    def test_chatml_family(self):
        s = self.compiled("qwen2.5")
        self.assertEqual(s["no_system"], "<|im_start|>system\nYou are Qwen, created by Alibaba "
                         "Cloud. You are a helpful assistant.<|im_end|>\n")
        self.assertEqual(s["end_of_turn"], "<|im_end|>")
        s = self.compiled("qwen3")
        self.assertEqual(s["no_system"], "")
        # Qwen3 cuts at </think> too, but renders the cut reasoning when the last user
        # message is a tool response: no cut is verified, such content stays refused
        self.assertIn("</think>", s["content"]["assistant"]["refuse_substrings"])
        self.assertEqual(s["content"]["assistant"]["cut_after"], "")
        self.assertTrue(s["rules"]["last_user"])  # a trailing assistant turn gets a think block

    def test_deepseek_family(self):
        s = self.compiled("deepseek_v3")
        self.assertEqual(s["system_first"], {"prefix": "<｜begin▁of▁sentence｜>", "suffix": ""})
        self.assertNotIn("system", s["roles"])  # later system messages move to the front
        s = self.compiled("r1-distill-qwen")
        self.assertEqual(s["generation"], "<｜Assistant｜><think>\n")
        for name in ("r1-distill-qwen", "r1-distill-llama"):
            s = self.compiled(name)
            self.assertEqual((s["content"]["assistant"]["cut_after"],
                              s["content"]["assistant"]["cut_lstrip"]), ("</think>", ""))
            self.assertEqual(s["content"]["assistant"]["refuse_substrings"], [])
            self.assertEqual(s["content"]["user"]["cut_after"], "")
        # DeepSeek-R1 (671B): V3's template with the distills' "</think>" cut; the
        # generation prompt opens a think block since an early-2025 update
        for name, gen in (("deepseek-r1", "<｜Assistant｜><think>\n"),
                          ("deepseek-r1-2501", "<｜Assistant｜>")):
            s = self.compiled(name)
            self.assertEqual(s["generation"], gen)
            self.assertEqual(s["system_first"], {"prefix": "<｜begin▁of▁sentence｜>", "suffix": ""})
            self.assertNotIn("system", s["roles"])
            self.assertEqual(s["roles"]["assistant"],
                             {"prefix": "<｜Assistant｜>", "suffix": "<｜end▁of▁sentence｜>"})
            # past reasoning: content.split('</think>')[-1], verified, not refused
            self.assertEqual((s["content"]["assistant"]["cut_after"],
                              s["content"]["assistant"]["cut_lstrip"]), ("</think>", ""))
            self.assertEqual(s["content"]["assistant"]["refuse_substrings"], [])

    def test_content_cuts(self):
        """A cut is recorded only where its behaviour matches jinja2 on every probe: the
        separator's last occurrence with an lstrip of '\n' (Qwen3 without its reasoning
        branch) is found; a cut at the first occurrence, keeping what precedes it, or
        stripping all whitespace is refused."""
        head = "{% for m in messages %}{% set c = m.content %}"
        tail = "<{{ m.role }}>{{ c }}</s>{% endfor %}{% if add_generation_prompt %}<a>{% endif %}"
        ifthink = "{% if m.role == 'assistant' and '</think>' in c %}"
        cases = {
            "split[-1].lstrip": (ifthink + "{% set c = c.split('</think>')[-1].lstrip('\n') %}"
                                 "{% endif %}", ("</think>", "\n")),
            "split[-1], no if": ("{% if m.role == 'assistant' %}"
                                 "{% set c = c.split('</think>')[-1] %}{% endif %}", ("</think>", "")),
            "split[1]": (ifthink + "{% set c = c.split('</think>')[1] %}{% endif %}", None),
            "split[0]": (ifthink + "{% set c = c.split('</think>')[0] %}{% endif %}", None),
            "split[-1].strip": (ifthink + "{% set c = c.split('</think>')[-1].strip() %}"
                                "{% endif %}", None),
            "split[-1].lstrip(' ')": (
                ifthink + "{% set c = c.split('</think>')[-1].lstrip(' ') %}{% endif %}", None),
        }
        for why, (body, want) in cases.items():
            with self.subTest(why=why):
                s = ct.compile_template(head + body + tail, {"eos_token": "</s>"})
                a = s["content"]["assistant"]
                if want is None:
                    self.assertEqual(a["cut_after"], "")
                    self.assertIn("</think>", a["refuse_substrings"])
                else:
                    self.assertEqual((a["cut_after"], a["cut_lstrip"]), want)
                    self.assertEqual(a["refuse_substrings"], [])

    def test_deepseek_r1_2501_matches_huggingface_js(self):
        # huggingface.js's own test of this template (packages/jinja/test/e2e.test.js,
        # the source of templates.json's entry): an independent Jinja engine's expected text
        try:
            import jinja2  # noqa: F401
        except ImportError:
            self.skipTest("jinja2 is not importable")
        cfg = family_config("deepseek-r1-2501")
        conv = [{"role": "user", "content": "Hi there."},
                {"role": "assistant", "content": '<think>The user said "Hi there."</think>Hi!'},
                {"role": "user", "content": "Tell me a joke."}]
        want = ("<｜begin▁of▁sentence｜><｜User｜>Hi there.<｜Assistant｜>Hi!<｜end▁of▁sentence｜>"
                "<｜User｜>Tell me a joke.<｜Assistant｜>")
        got = ct.render(cfg["chat_template"], conv, ct.special_tokens(cfg),
                        datetime.date(2025, 2, 3))
        self.assertEqual(got, want)

    def test_mistral_and_zephyr(self):
        for name in ("mistral-v0.1", "mixtral-v0.1"):
            s = self.compiled(name)
            self.assertIsNone(s["system_first"])
            self.assertTrue(s["rules"]["alternate"])
            self.assertEqual(s["end_of_turn"], "</s>")
        s = self.compiled("zephyr")
        self.assertEqual(s["roles"]["user"], {"prefix": "<|user|>\n", "suffix": "</s>\n"})
        self.assertEqual(s["generation"], "<|assistant|>\n")

    def test_refused_templates(self):
        bad = {
            "numbers the turns": "{% for m in messages %}{{ loop.index }}: {{ m.content }}\n"
                                 "{% endfor %}",
            "does not parse": "{% for %}",
            "changes the content": "{% for m in messages %}{{ m.content | upper }}{% endfor %}",
            "tests the length": "{% for m in messages %}{% if m.content|length > 20 %}L{% endif %}"
                                "<{{ m.role }}>{{ m.content }}{% endfor %}",
            "holds the date marker": "\ue000{% for m in messages %}{{ m.content }}{% endfor %}",
        }
        for why, t in bad.items():
            with self.subTest(why=why):
                with self.assertRaises(ct.TemplateRefused):
                    ct.compile_template(t, {"eos_token": "</s>"})
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "tokenizer_config.json")
            with open(p, "w") as f:
                json.dump({"chat_template": bad["numbers the turns"]}, f)
            r = subprocess.run([sys.executable, SCRIPT, "compile", p], capture_output=True,
                               text=True, timeout=120)
            self.assertEqual(r.returncode, 1)
            self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)


class RenderTest(unittest.TestCase):
    """./run --render-chat against the committed jinja2 texts."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def compiled_path(self, name):
        cfg = family_config(name)
        if cfg is None:
            self.skipTest("../shared/data/tokenizers/%s is absent" % name)
        p = os.path.join(self.tmp.name, name + ".json")
        if not os.path.exists(p):
            with open(p, "w", encoding="utf-8") as f:
                json.dump(ct.compile_from_config(cfg), f, ensure_ascii=False)
        return p, cfg

    def test_families(self):
        today = datetime.date.fromisoformat(REFERENCE["today"])
        try:
            import jinja2  # noqa: F401
            have_jinja = True
        except ImportError:
            have_jinja = False
        n_checked = 0
        for name, fam in REFERENCE["families"].items():
            if family_config(name) is None:
                print("skipping %s: ../shared/data/tokenizers/%s is absent" % (name, name))
                continue
            tpl, cfg = self.compiled_path(name)
            for i, case in enumerate(fam["cases"]):
                with self.subTest(family=name, case=i):
                    if have_jinja:  # the committed reference is still jinja2's
                        try:
                            want = ct.render(cfg["chat_template"], case["messages"],
                                             ct.special_tokens(cfg), today)
                        except ct._Raised:
                            want = None
                        self.assertEqual(want, case["text"])
                    mp = os.path.join(self.tmp.name, "m.json")
                    with open(mp, "w", encoding="utf-8") as f:
                        json.dump(case["messages"], f, ensure_ascii=False)
                    r = run(["--chat-template", tpl, "--render-chat", mp, "--today",
                             REFERENCE["today"]])
                    if case["refused"] is not None:
                        self.assertEqual(r.returncode, 1, r.stdout)
                        err = r.stderr.decode().strip().splitlines()
                        self.assertEqual(len(err), 1, err)
                        self.assertTrue(err[0].startswith("run: error:"), err)
                        self.assertEqual(r.stdout, b"")
                    else:
                        self.assertEqual(r.returncode, 0, r.stderr)
                        self.assertEqual(r.stdout.decode("utf-8"), case["text"])
                    n_checked += 1
        self.assertGreater(n_checked, 0)

    def test_today_by_default(self):
        tpl, cfg = self.compiled_path("llama3.2")
        mp = os.path.join(self.tmp.name, "hi.json")
        with open(mp, "w") as f:
            json.dump([{"role": "user", "content": "Hi"}], f)
        before = datetime.date.today().strftime("%d %b %Y")
        r = run(["--chat-template", tpl, "--render-chat", mp])
        after = datetime.date.today().strftime("%d %b %Y")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(("Today Date: %s\n" % before) in r.stdout.decode()
                        or ("Today Date: %s\n" % after) in r.stdout.decode(), r.stdout)

    def test_bad_inputs(self):
        tpl, _ = self.compiled_path("zephyr")
        good = os.path.join(self.tmp.name, "good.json")
        with open(good, "w") as f:
            json.dump([{"role": "user", "content": "Hi"}], f)
        messages = {
            "not json": "[{",
            "not a list": '{"role": "user", "content": "x"}',
            "empty list": "[]",
            "not objects": '["hello"]',
            "no content": '[{"role": "user"}]',
            "content not a string": '[{"role": "user", "content": 3}]',
            "unknown role": '[{"role": "tool", "content": "x"}]',
            "extra key": '[{"role": "user", "content": "x", "tool_calls": []}]',
        }
        cases = []
        for why, text in messages.items():
            p = os.path.join(self.tmp.name, "bad.json")
            with open(p, "w") as f:
                f.write(text)
            cases.append((why, ["--chat-template", tpl, "--render-chat", p]))
        bad_tpl = os.path.join(self.tmp.name, "bad_tpl.json")
        with open(bad_tpl, "w") as f:
            json.dump({"version": 2}, f)
        cases += [
            ("missing messages file", ["--chat-template", tpl, "--render-chat", "/nonexistent"]),
            ("bad compiled template", ["--chat-template", bad_tpl, "--render-chat", good]),
            ("template not JSON", ["--chat-template", good + "x", "--render-chat", good]),
            ("bad date", ["--chat-template", tpl, "--render-chat", good, "--today", "2025-02-30"]),
            ("bad date format", ["--chat-template", tpl, "--render-chat", good, "--today", "3 Feb"]),
            ("no template, no model", ["--render-chat", good]),
            ("two modes", ["--chat-template", tpl, "--render-chat", good, "--encode-chat", good]),
        ]
        for why, args in cases:
            with self.subTest(why=why):
                r = run(args)
                self.assertEqual(r.returncode, 1, (r.stdout, r.stderr))
                err = r.stderr.decode().strip().splitlines()
                self.assertEqual(len(err[-1:]), 1)
                self.assertTrue(err[-1].startswith("run: error:"), err)
                self.assertEqual(r.stdout, b"")


if __name__ == "__main__":
    unittest.main()


class ChatModeTest(unittest.TestCase):
    """./run --chat on a tiny random model with the project's SentencePiece tokenizer:
    the KV cache is kept across turns (turn 2 prefills only its own tokens, and its
    greedy reply equals a one-shot run over everything the model has seen)."""

    @classmethod
    def setUpClass(cls):
        import numpy as np
        import mixformat
        cls.tmp = tempfile.TemporaryDirectory()
        d = cls.tmp.name
        with open(os.path.join(util.ROOT, "weights", "tokenizer.model"), "rb") as f:
            spm_bytes = f.read()
        rng = np.random.default_rng(3)
        cfg = dict(dim=16, n_layers=2, vocab_size=4096, max_seq_len=256, hidden_dim=32,
                   norm_eps=1e-5, bos_id=1, eos_id=2, rope_theta=10000.0)
        layers = [dict(kind="gqa", n_heads=4, n_kv_heads=2, head_dim=4),
                  dict(kind="mla", n_heads=2, q_lora_rank=8, kv_lora_rank=8,
                       qk_nope_head_dim=4, qk_rope_head_dim=2, v_head_dim=4)]
        tensors = {n: (1 + 0.1 * rng.standard_normal(s) if n.endswith("norm")
                       else 0.5 * rng.standard_normal(s)).astype(np.float32)
                   for n, s in mixformat.expected_tensors(cfg, layers).items()}
        cls.model = os.path.join(d, "tiny.bin")
        mixformat.write_model(cls.model, cfg, layers, tensors, tokenizer_bytes=spm_bytes)
        cls.structures = {}
        for name in ("qwen2.5", "zephyr", "mistral-v0.1"):
            s = ct.compile_from_config(family_config(name))
            p = os.path.join(d, name + ".json")
            with open(p, "w", encoding="utf-8") as f:
                json.dump(s, f, ensure_ascii=False)
            cls.structures[name] = (p, s)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def chat(self, args, stdin):
        util.require_run()
        return subprocess.run([util.RUN, self.model, "--chat"] + args, input=stdin.encode(),
                              capture_output=True, timeout=120)

    def test_kv_cache_across_turns(self):
        import sentencepiece as spm
        sp = spm.SentencePieceProcessor(model_file=os.path.join(util.ROOT, "weights",
                                                                "tokenizer.model"))
        # ChatML: its markers are plain text for this tokenizer (as for transformers)
        tpl, s = self.structures["qwen2.5"]
        system, u1, u2 = "Be brief.", "Once upon a time", "What happened next?"
        r = self.chat(["--chat-template", tpl, "--system", system, "-t", "0", "-n", "12",
                       "--print-ids"], u1 + "\n" + u2 + "\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.decode().splitlines()
        self.assertEqual(len(lines), 2, r.stdout)
        reply1, reply2 = [[int(x) for x in line.split()] for line in lines]
        text1, _ = ct.render_structure(s, [{"role": "system", "content": system},
                                           {"role": "user", "content": u1}])
        ids1 = sp.encode(text1)
        text2 = (s["roles"]["assistant"]["suffix"] + s["roles"]["user"]["prefix"] + u2
                 + s["roles"]["user"]["suffix"] + s["generation"])
        ids2 = sp.encode(text2)
        stats = [line for line in r.stderr.decode().splitlines() if line.startswith("chat:")]
        self.assertEqual(stats[0].split(":")[2].split(",")[0].strip(),
                         "prefilled %d tokens" % len(ids1))
        self.assertEqual(stats[1].split(":")[2].split(",")[0].strip(),
                         "prefilled %d tokens" % len(ids2))
        self.assertEqual(len(reply1), 12)  # random weights: no EOS within 12 tokens here
        want2 = util.greedy_ids(self.model, ids1 + reply1 + ids2, 12)
        self.assertIsNone(util.greedy_mismatch(reply2, want2, {2}))
        # --encode-chat renders and encodes the first turn the same way
        mp = os.path.join(self.tmp.name, "m.json")
        with open(mp, "w") as f:
            json.dump([{"role": "system", "content": system}, {"role": "user", "content": u1}], f)
        out = util.run_cli([self.model, "--chat-template", tpl, "--encode-chat", mp])
        self.assertEqual([int(x) for x in out.split()], ids1)

    def test_embedded_records(self):
        """The compiled template from the checkpoint's config blob; a refused one's reason."""
        import mixformat
        cfg, layers, tensors, tok = mixformat.read_model(self.model)
        with open(self.structures["qwen2.5"][0], "rb") as f:
            compiled = f.read()
        for records, want_rc, want in (({"chat_template": compiled}, 0, None),
                                       ({"chat_template_refused": b"it numbers\nthe turns"}, 1,
                                        "its chat template was refused at conversion: it "
                                        "numbers the turns"),
                                       ({"chat_template": b"{\"version\": 7}"}, 1,
                                        "unknown structure version")):
            with self.subTest(records=list(records)):
                path = os.path.join(self.tmp.name, "rec.bin")
                mixformat.write_model(path, cfg, layers, tensors, tokenizer_bytes=tok,
                                      tokenizer_kind="sentencepiece", tokenizer_config=records)
                r = subprocess.run([util.RUN, path, "--chat", "-t", "0", "-n", "2"],
                                   input=b"Hi\n", capture_output=True, timeout=60)
                self.assertEqual(r.returncode, want_rc, r.stderr)
                if want:
                    err = r.stderr.decode().strip().splitlines()
                    self.assertEqual(len(err), 1, err)
                    self.assertIn(want, err[0])
                else:
                    self.assertEqual(len(r.stdout.splitlines()), 1)

    def test_eof_and_errors(self):
        tpl, _ = self.structures["qwen2.5"]
        r = self.chat(["--chat-template", tpl, "-t", "0", "-n", "4"], "")
        self.assertEqual((r.returncode, r.stdout), (0, b""))
        r = self.chat(["--chat-template", tpl, "-t", "0", "-n", "40", "-c", "48"],
                      "Tell me a very long story about a little girl named Lily.\n" * 3)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertRegex(r.stderr.decode().strip().splitlines()[-1],
                         r"^run: error: --chat: the (conversation no longer fits the )?context.*raise -c")
        r = self.chat(["--chat-template", tpl, "-t", "0", "-n", "1", "-c", "30"],
                      "Hi\n" + "Tell me a very long story about a little girl named Lily.\n")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("no longer fits the context", r.stderr.decode().strip().splitlines()[-1])
        # a stdin line is read into a bounded buffer (1 MiB): longer ones are refused,
        # also after a first turn and without a final newline
        for stdin in ("x" * ((1 << 20) + 1) + "\n", "Hi\n" + "y" * (3 << 20)):
            r = self.chat(["--chat-template", tpl, "-t", "0", "-n", "1", "-c", "256"], stdin)
            self.assertEqual(r.returncode, 1, r.stderr[-300:])
            self.assertEqual(r.stderr.decode().strip().splitlines()[-1],
                             "run: error: --chat: a line of stdin is longer than 1048576 bytes")
        r = self.chat(["--chat-template", tpl, "-t", "0", "-n", "1", "-c", "64"],
                      "z" * (1 << 20) + "\n")  # exactly the bound: read, then too long a turn
        self.assertNotIn(b"longer than", r.stderr)
        mistral, _ = self.structures["mistral-v0.1"]
        for why, args in (("system refused", ["--chat-template", mistral, "--system", "x"]),
                          ("no template", []),
                          ("</s> as text through a tokenizer.model",
                           ["--chat-template", self.structures["zephyr"][0]]),
                          ("--system without --chat", None)):
            with self.subTest(why=why):
                if args is None:
                    util.require_run()
                    r = subprocess.run([util.RUN, self.model, "--system", "x", "-p", "hi"],
                                       capture_output=True, timeout=60)
                else:
                    r = self.chat(args, "Hi\n")
                self.assertEqual(r.returncode, 1, r.stderr)
                err = r.stderr.decode().strip().splitlines()
                self.assertEqual(len(err), 1, err)
                self.assertTrue(err[0].startswith("run: error:"), err)



with open(os.path.join(FIX, "reference_ids.json"), encoding="utf-8") as f:
    REFERENCE_IDS = json.load(f)


class IdsTest(unittest.TestCase):
    """./run -z tokenizer.json --encode-chat: the ids @huggingface/tokenizers gives for
    the jinja2 rendering (add_special_tokens=False), for every family whose tokenizer is
    in ../shared/data/tokenizers; the same through a tiny .bin embedding that tokenizer
    and the compiled template (ChatBinTest)."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def check_family(self, name, args):
        """All the family's renderable conversations in one run (one line each); each
        refused one alone (one error line, exit 1)."""
        fam = REFERENCE["families"][name]
        want_all = REFERENCE_IDS["families"][name]
        files, wants = [], []
        for i, (case, want) in enumerate(zip(fam["cases"], want_all)):
            mp = os.path.join(self.tmp.name, "%s_%d.json" % (name, i))
            with open(mp, "w", encoding="utf-8") as f:
                json.dump(case["messages"], f, ensure_ascii=False)
            if want is None:
                with self.subTest(family=name, case=i):
                    r = run(args + ["--encode-chat", mp, "--today", REFERENCE["today"]])
                    self.assertEqual(r.returncode, 1, r.stdout)
                    self.assertEqual(len(r.stderr.decode().strip().splitlines()), 1, r.stderr)
                continue
            files += ["--encode-chat", mp]
            wants.append(want)
        r = run(args + files + ["--today", REFERENCE["today"]])
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.decode().splitlines()
        self.assertEqual(len(lines), len(wants))
        for i, (line, want) in enumerate(zip(lines, wants)):
            with self.subTest(family=name, renderable_case=i):
                self.assertEqual([int(x) for x in line.split()], want)

    def test_with_tokenizer_json(self):
        n = 0
        for name, fam in REFERENCE["families"].items():
            tj = os.path.join(SHARED, fam["tokenizer"], "tokenizer.json")
            cfg = family_config(name)
            if cfg is None or not os.path.exists(tj):
                print("skipping %s: ../shared/data/tokenizers is absent" % name)
                continue
            tpl = os.path.join(self.tmp.name, name + ".json")
            with open(tpl, "w", encoding="utf-8") as f:
                json.dump(ct.compile_from_config(cfg), f, ensure_ascii=False)
            self.check_family(name, ["-z", tj, "--chat-template", tpl])
            n += 1
        if n == 0:
            self.skipTest("../shared/data/tokenizers is absent")


class ChatBinTest(unittest.TestCase):
    """Tiny .bin models converted by scripts/convert_hf.py from HF folders holding a real
    tokenizer.json and tokenizer_config.json of ../shared (the compiled template goes
    into the checkpoint): --encode-chat gives @huggingface/tokenizers' ids for the
    family's conversations, and --chat runs on the embedded template. The Mistral folder
    gets TinyLlama's Zephyr template and also a tokenizer.model, which a chat model must
    not use (transformers' tokenizer matches </s> in the text; SentencePiece would not)."""

    FOLDERS = {"llama3": "llama3", "qwen3": "qwen3", "deepseek_v3": "deepseek_v3",
               "mistral": "zephyr"}

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)

    def convert(self, folder, family):
        import numpy as np
        import safetensors_np as st
        src = os.path.join(SHARED, folder)
        with open(os.path.join(src, "tokenizer.json"), encoding="utf-8") as f:
            tj = json.load(f)
        V = 1 + max([max(tj["model"]["vocab"].values())] + [t["id"] for t in tj["added_tokens"]])
        d = os.path.join(self.tmp.name, folder)
        os.mkdir(d)
        D, I, H = 8, 16, 2
        cfg = dict(architectures=["LlamaForCausalLM"], hidden_size=D, num_hidden_layers=1,
                   num_attention_heads=H, intermediate_size=I, vocab_size=V, rms_norm_eps=1e-5,
                   hidden_act="silu", max_position_embeddings=512, tie_word_embeddings=True)
        rng = np.random.default_rng(0)
        t = {"model.embed_tokens.weight": rng.standard_normal((V, D)).astype(np.float32),
             "model.norm.weight": np.ones(D, np.float32)}
        p = "model.layers.0."
        for k, shape in (("self_attn.q_proj", (D, D)), ("self_attn.k_proj", (D, D)),
                         ("self_attn.v_proj", (D, D)), ("self_attn.o_proj", (D, D)),
                         ("mlp.gate_proj", (I, D)), ("mlp.up_proj", (I, D)),
                         ("mlp.down_proj", (D, I))):
            t[p + k + ".weight"] = rng.standard_normal(shape).astype(np.float32)
        t[p + "input_layernorm.weight"] = np.ones(D, np.float32)
        t[p + "post_attention_layernorm.weight"] = np.ones(D, np.float32)
        st.save_file(t, os.path.join(d, "model.safetensors"))
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f)
        with open(os.path.join(src, "tokenizer_config.json"), encoding="utf-8") as f:
            tc = json.load(f)
        if family in FIXTURE_TEMPLATES:
            tc["chat_template"] = FIXTURE_TEMPLATES[family]["chat_template"]
            with open(os.path.join(util.ROOT, "weights", "tokenizer.model"), "rb") as f:
                spm_bytes = f.read()
            with open(os.path.join(d, "tokenizer.model"), "wb") as f:
                f.write(spm_bytes)
        with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(tc, f, ensure_ascii=False)
        with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(tj, f, ensure_ascii=False)
        out = os.path.join(self.tmp.name, folder + ".bin")
        util.convert(d, out)
        return out

    def test_embedded_templates(self):
        if not os.path.isdir(SHARED):
            self.skipTest("../shared/data/tokenizers is absent")
        for folder, family in self.FOLDERS.items():
            with self.subTest(family=family):
                model = self.convert(folder, family)
                self.assertEqual(util.info(model)["tokenizer_kind"], "tokenizer.json")
                fam = REFERENCE["families"][family]
                wants = REFERENCE_IDS["families"][family]
                args = [model]
                expect = []
                for i, (case, want) in enumerate(zip(fam["cases"], wants)):
                    if want is None:
                        continue
                    mp = os.path.join(self.tmp.name, "%s_%d.json" % (family, i))
                    with open(mp, "w", encoding="utf-8") as f:
                        json.dump(case["messages"], f, ensure_ascii=False)
                    args += ["--encode-chat", mp]
                    expect.append(want)
                out = util.run_cli(args + ["--today", REFERENCE["today"]])
                got = [[int(x) for x in line.split()] for line in out.splitlines()]
                self.assertEqual(got, expect)
                r = subprocess.run([util.RUN, model, "--chat", "-t", "0", "-n", "3"],
                                   input=b"Hi\nBye\n", capture_output=True, timeout=120)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(len(r.stdout.decode("utf-8", "replace").split("\n")), 3)
