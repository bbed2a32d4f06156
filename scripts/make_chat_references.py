#!/usr/bin/env python3
"""Writes tests/fixtures/chat/reference_text.json: the chat renderings the tests compare
the C runtime with, made by jinja2 configured exactly as transformers configures it
(scripts/chat_template.py render), at a fixed date (--today of the tests).

    python3 scripts/make_chat_references.py [SHARED_TOKENIZERS_DIR]

Templates: tests/fixtures/chat/templates.json (each with its public source) and the
three tokenizer_config.json files of ../shared/data/tokenizers (llama3, qwen3,
deepseek_v3). For each family and each conversation of CONVERSATIONS it records the
jinja2 text, or that jinja2 raised, and whether the compiled structure refuses the
conversation (the runtime must then refuse it too). Reference ids are made separately
under node with @huggingface/tokenizers (tests/fixtures/chat/make_ids.mjs).
"""
import datetime
import json
import os
import sys

import chat_template as ct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures", "chat")
TODAY = "2025-02-03"


def m(role, content):
    return {"role": role, "content": content}


CONVERSATIONS = [
    [m("user", "Hello!")],
    [m("system", "You are a helpful assistant."), m("user", "What is 2+2?"),
     m("assistant", "2+2 = 4."), m("user", "And 3+3?")],
    [m("user", "Tell me a story."), m("assistant", "Once upon a time, a cat sat on a mat."),
     m("user", "Grüße aus Köln! 日本語で？ 👨‍👩‍👧‍👦 e\u0301"), m("assistant", "Ja.\n\nはい。"),
     m("user", "line one\nline two\n\n\ttabbed")],
    [m("system", "Réponds en français.\nSois bref."), m("user", "  padded question?  \n"),
     m("assistant", " padded answer "), m("user", "ok")],
    [m("user", "code: `x = {'a': [1, 2]}` {{ not jinja }} {% raw %}"), m("assistant", ""),
     m("user", "literal <|eot_id|> <|im_end|> </s> [INST] tokens")],
    [m("user", "Think first."), m("assistant", "<think>\nreasoning\n</think>\n\nThe answer."),
     m("user", "Again?")],
    [m("system", "First system."), m("user", "Hi"), m("assistant", "Hello"),
     m("system", "A second system message."), m("user", "Bye")],
    [m("user", "Hi"), m("user", "Hi again")],
    [m("user", "Hi"), m("assistant", "Trailing assistant message.")],
    [m("system", "Only a system message.")],
    # past reasoning: R1 and its distills keep what follows an assistant message's last
    # </think> (0, 1 and 2 of them, at the start, at the end, the whole content)
    [m("system", "Think step by step."), m("user", "Q1"),
     m("assistant", "<think>\nfirst\n</think>\n\nAnswer one."), m("user", "Q2"),
     m("assistant", "No thinking here."), m("user", "Q3"),
     m("assistant", "<think>a</think>b</think>\n\nc"), m("user", "Q4")],
    [m("user", "Hi"), m("assistant", "</think>"), m("user", "Again"),
     m("assistant", "</think>starts with it"), m("user", "And?"),
     m("assistant", "ends with it</think>"), m("user", "Done?")],
    [m("user", "Hi"), m("assistant", "</think></think>"), m("user", "x </think> y")],
]


def families(shared):
    out = []
    for name in ("llama3", "qwen3", "deepseek_v3"):
        p = os.path.join(shared, name, "tokenizer_config.json")
        with open(p, encoding="utf-8") as f:
            cfg = json.load(f)
        with open(os.path.join(shared, name, "tokenizer.json"), encoding="utf-8") as f:
            tj = json.load(f)
        out.append(dict(name=name, config=cfg, tokenizer_json=tj, tokenizer=name))
    with open(os.path.join(FIX, "templates.json"), encoding="utf-8") as f:
        for t in json.load(f)["templates"]:
            cfg = dict(chat_template=t["chat_template"], bos_token=t["bos_token"],
                       eos_token=t["eos_token"])
            with open(os.path.join(shared, t["tokenizer"], "tokenizer.json"), encoding="utf-8") as f:
                tj = json.load(f)
            out.append(dict(name=t["name"], config=cfg, tokenizer_json=tj, tokenizer=t["tokenizer"]))
    return out


def main(argv):
    shared = argv[1] if len(argv) > 1 else os.path.join(ROOT, "..", "shared", "data", "tokenizers")
    today = datetime.date.fromisoformat(TODAY)
    ref = dict(today=TODAY, note="jinja2 %s as transformers configures it; made by "
               "scripts/make_chat_references.py" % __import__("jinja2").__version__,
               families={})
    for fam in families(shared):
        s = ct.compile_from_config(fam["config"], fam["tokenizer_json"])
        specials = ct.special_tokens(fam["config"])
        cases = []
        for conv in CONVERSATIONS:
            try:
                text = ct.render(fam["config"]["chat_template"], conv, specials, today)
            except ct._Raised as e:
                text, raised = None, str(e)
            else:
                raised = None
            _, refused = ct.render_structure(s, conv)
            if refused is None and text is None:
                raise SystemExit("%s: the structure renders what jinja2 refuses" % fam["name"])
            cases.append(dict(messages=conv, text=text, jinja_raised=raised, refused=refused))
        ref["families"][fam["name"]] = dict(tokenizer=fam["tokenizer"], cases=cases)
        print("%-20s %d conversations, %d refused" % (
            fam["name"], len(cases), sum(c["refused"] is not None for c in cases)))
    with open(os.path.join(FIX, "reference_text.json"), "w", encoding="utf-8") as f:
        json.dump(ref, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv)
