#!/usr/bin/env python3
"""Chat templates: render them as transformers does, and compile them for the C runtime.

The runtime has no Jinja interpreter. At conversion time this module renders the
model's Jinja `chat_template` with jinja2, configured exactly as transformers'
`apply_chat_template` configures it, on probe conversations, derives a small
structure the C side can render (tokenizer/chat_template.c), and then VERIFIES that
structure against jinja2 on a few thousand varied conversations. A template whose
structure does not reproduce jinja2 exactly is refused; conversations the
structure cannot render (a system message where the template forbids or moves it,
roles out of order, content the template inspects) are refused at run time with a
message, never rendered differently. docs/CHAT.md describes the structure.

    python3 scripts/chat_template.py compile tokenizer_config.json      # print the structure
    python3 scripts/chat_template.py render tokenizer_config.json MESSAGES.json [--today Y-M-D]

Only the standard library and jinja2 (Debian's python3-jinja2, which transformers uses).
"""
import argparse
import datetime
import hashlib
import itertools
import json
import re
import sys

FORMAT_VERSION = 2
# the characters a content cut may lstrip after its separator (the runtime's are ASCII)
CUT_LSTRIPS = ("", "\n")
# strftime_now(fmt) renders as DATE_OPEN fmt DATE_CLOSE in a compiled string; the
# runtime writes strftime(fmt) of the day it runs (private-use code points, so a
# template holding them is refused).
DATE_OPEN, DATE_CLOSE = "\ue000", "\ue001"
SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token",
                "mask_token")


class TemplateRefused(ValueError):
    pass


class _Raised(Exception):
    """jinja2 raised while rendering (raise_exception or any template error)."""


# --- rendering as transformers does -------------------------------------------------

def token_text(v):
    """A special token from tokenizer_config.json: a string or {"content": ...}."""
    if isinstance(v, dict):
        return v.get("content")
    return v


def special_tokens(tokenizer_config):
    """The template variables transformers passes: special tokens by name (as strings)."""
    out = {}
    for k in SPECIAL_KEYS:
        t = token_text(tokenizer_config.get(k))
        if isinstance(t, str):
            out[k] = t
    extra = tokenizer_config.get("additional_special_tokens")
    if isinstance(extra, list):
        out["additional_special_tokens"] = [token_text(t) for t in extra]
    return out


def _environment(strftime):
    import jinja2
    import jinja2.ext
    import jinja2.sandbox

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime
    return env


class Renderer:
    """One compiled jinja2 template; render(messages) -> text, as
    apply_chat_template(messages, add_generation_prompt=True, tokenize=False)."""

    def __init__(self, template, specials, today=None):
        if today is None:
            def strftime(fmt):
                return DATE_OPEN + fmt + DATE_CLOSE
        else:
            def strftime(fmt):
                return today.strftime(fmt)
        import jinja2
        try:
            self.template = _environment(strftime).from_string(template)
        except jinja2.exceptions.TemplateError as e:
            raise TemplateRefused("the chat template does not parse: %s" % e) from None
        self.specials = specials

    def render(self, messages, add_generation_prompt=True):
        try:
            return self.template.render(messages=messages, tools=None, documents=None,
                                        add_generation_prompt=add_generation_prompt,
                                        **self.specials)
        except Exception as e:  # noqa: BLE001 - any failure of the template is "raised"
            raise _Raised(str(e)) from None


def render(template, messages, specials, today):
    """Reference rendering (tests, tools) for a given date (datetime.date)."""
    return Renderer(template, specials, today).render(messages)


# --- the structure and its renderer (the C runtime mirrors _render_structure) -------

# Python's str.strip() whitespace (what jinja2's |trim and .strip() remove)
PY_SPACE = "".join(chr(c) for c in range(0x110000) if chr(c).isspace())


def _refusal(s, messages):
    """None if the structure can render messages, else the reason it refuses."""
    if not isinstance(messages, list) or not messages:
        return "the conversation is empty"
    rules = s["rules"]
    for i, m in enumerate(messages):
        role, content = m["role"], m["content"]
        if role not in ("system", "user", "assistant"):
            return "message %d: role '%s' is not supported (system, user, assistant)" % (i, role)
        if role == "system":
            if s["system_first"] is None:
                return "this chat template does not accept a system message"
            if i > 0 and "system" not in s["roles"]:
                return "this chat template accepts a system message only as the first message"
        key = "system_first" if (role == "system" and i == 0) else role
        c = s["content"][key]
        if c["refuse_empty"] and content == "":
            return "message %d: this chat template treats empty %s content specially" % (i, role)
        if c["refuse_padded"] and content != content.strip(PY_SPACE):
            return ("message %d: this chat template treats %s content with leading or trailing "
                    "whitespace specially" % (i, role))
        for sub in c["refuse_substrings"]:
            if sub in content:
                return "message %d: this chat template treats %s content holding %r specially" % (
                    i, role, sub)
    rest = messages[1:] if messages[0]["role"] == "system" else messages
    if rules["alternate"]:
        for j, m in enumerate(rest):
            if m["role"] != ("user" if j % 2 == 0 else "assistant"):
                return "this chat template needs the roles to alternate user/assistant/user/..."
    if rules["last_user"] and messages[-1]["role"] != "user":
        return "this chat template needs the conversation to end with a user message"
    return None


def _content(s, key, text):
    c = s["content"][key]
    sep = c["cut_after"]
    if sep and sep in text:  # text.split(sep)[-1], then lstrip (what R1 and Qwen3 do)
        text = text.split(sep)[-1].lstrip(c["cut_lstrip"])
    return text.strip(PY_SPACE) if c["strip"] else text


def _render_structure(s, messages):
    out = []
    rest = messages
    if messages[0]["role"] == "system":
        sf = s["system_first"]
        out += [sf["prefix"], _content(s, "system_first", messages[0]["content"]), sf["suffix"]]
        rest = messages[1:]
    else:
        out.append(s["no_system"])
    for m in rest:
        r = s["roles"][m["role"]]
        out += [r["prefix"], _content(s, m["role"], m["content"]), r["suffix"]]
    out.append(s["generation"])
    return "".join(out)


def render_structure(s, messages):
    """-> (text, None) or (None, reason)."""
    why = _refusal(s, messages)
    if why:
        return None, why
    return _render_structure(s, messages), None


# --- derivation ---------------------------------------------------------------------

SENT = {k: "QZX%sJQ" % k for k in ("U1", "U2", "A1", "A2", "S1", "S2")}


def _msg(role, content):
    return {"role": role, "content": content}


def _split(r, msgs, gen=False):
    """Render and cut at the sentinel contents: [text before 1st, between, ..., after last]."""
    try:
        text = r.render(msgs, add_generation_prompt=gen)
    except _Raised:
        return None
    parts, at = [], 0
    for m in msgs:
        k = text.find(m["content"], at)
        if k < 0 or text.count(m["content"]) != 1:
            return None
        parts.append(text[at:k])
        at = k + len(m["content"])
    parts.append(text[at:])
    return parts


def _minus_prefix(s, p):
    if not s.startswith(p):
        raise TemplateRefused("no consistent per-role prefix/suffix structure")
    return s[len(p):]


def _minus_suffix(s, p):
    if not s.endswith(p):
        raise TemplateRefused("no consistent per-role prefix/suffix structure")
    return s[:len(s) - len(p)]


def _derive_roles(pg, p, t, generation):
    """The user/assistant strings for one guess of the generation prompt."""
    user_suffix = _minus_suffix(pg[3], generation)
    asst_prefix = _minus_prefix(pg[1], user_suffix)
    asst_suffix = _minus_suffix(t[2], generation)
    user_prefix = _minus_prefix(pg[2], asst_suffix)
    no_system = _minus_suffix(pg[0], user_prefix)
    return dict(version=FORMAT_VERSION, no_system=no_system, generation=generation,
                system_first=None,
                roles=dict(user=dict(prefix=user_prefix, suffix=user_suffix),
                           assistant=dict(prefix=asst_prefix, suffix=asst_suffix)),
                rules=dict(alternate=False, last_user=False))


def _strips(r, msgs, i):
    """Does the template strip surrounding whitespace from message i's content?"""
    padded = [dict(x) for x in msgs]
    padded[i]["content"] = " \n\t%s \n" % msgs[i]["content"]
    try:
        text = r.render(padded, add_generation_prompt=True)
    except _Raised:
        return False
    return padded[i]["content"] not in text and msgs[i]["content"] in text


def derive(r, core, tokens=()):
    """Probe renders -> the structure (before verification adds restrictions).

    The text between two contents is "suffix of one role + prefix of the next"; where
    the cut lies is fixed by the renders without a generation prompt (the generation
    prompt is what add_generation_prompt=True adds at the end). A template that writes
    it regardless has no such witness: then every cut of the closing text is tried and
    the first whose structure renders the core conversations exactly is kept, cuts
    before a special token (tokens) first."""
    U1, U2, A1, S1, S2 = (_msg("user", SENT["U1"]), _msg("user", SENT["U2"]),
                          _msg("assistant", SENT["A1"]), _msg("system", SENT["S1"]),
                          _msg("system", SENT["S2"]))
    pg = _split(r, [U1, A1, U2], gen=True)
    p = _split(r, [U1, A1, U2])
    t = _split(r, [U1, A1], gen=True)
    if not (pg and t):
        raise TemplateRefused("it does not render a plain user/assistant/user conversation")
    guesses = []
    if p and pg[3].startswith(p[3]):
        guesses.append(pg[3][len(p[3]):])
    cuts = range(len(pg[3]) + 1)  # cuts before a special token first, then any
    guesses += [pg[3][k:] for k in cuts if any(pg[3].startswith(t, k) for t in tokens if t)]
    guesses += [pg[3][k:] for k in cuts]
    s = None
    for g in guesses:
        try:
            cand = _derive_roles(pg, p, t, g)
        except TemplateRefused:
            continue
        cand["content"] = {k: dict(strip=False, refuse_empty=False, refuse_padded=False,
                                   refuse_substrings=[], cut_after="", cut_lstrip="")
                           for k in ("user", "assistant", "system_first", "system")}
        for key, msgs, i in (("user", [U1, A1, U2], 2), ("assistant", [U1, A1, U2], 1)):
            cand["content"][key]["strip"] = _strips(r, msgs, i)
        if not verify(r, cand, core):
            s = cand
            break
    if s is None:
        raise TemplateRefused("no per-role prefix/suffix structure reproduces plain "
                              "user/assistant conversations")
    user_prefix = s["roles"]["user"]["prefix"]
    asst_suffix = s["roles"]["assistant"]["suffix"]
    q = _split(r, [S1, U1, A1, U2])
    if q:
        try:
            s["system_first"] = dict(prefix=q[0], suffix=_minus_suffix(q[1], user_prefix))
        except TemplateRefused:
            pass
    m = _split(r, [U1, A1, S2, U2])
    if m and s["system_first"] is not None:
        try:
            s["roles"]["system"] = dict(prefix=_minus_prefix(m[2], asst_suffix),
                                        suffix=_minus_suffix(m[3], user_prefix))
        except TemplateRefused:
            pass
    for key, msgs, i in (("system_first", [S1, U1, A1, U2], 0),
                         ("system", [U1, A1, S2, U2], 2)):
        s["content"][key]["strip"] = _strips(r, msgs, i)
    return s


# --- verification -------------------------------------------------------------------

WORDS = ["Hello!", "How are you today?", "Tell me a story about a cat.", "I'm fine, thanks.",
         "Why is the sky blue?", "Because of Rayleigh scattering.", "OK", "Sure, here it is."]
UNICODE = ["Grüße aus Köln, ça va? 日本語のテキスト 👨‍👩‍👧‍👦 e\u0301 Ω", "line one\nline two\n\nline 4",
           "tabs\tand  double  spaces", "code: `x = {'a': [1, 2]}` <b>bold</b> {{ not jinja }}"]
SYSTEMS = ["You are a helpful assistant.", "Answer briefly.\nUse French.", "Réponds en 日本語."]


def _conv(shape, contents):
    it = iter(contents)
    return [_msg({"s": "system", "u": "user", "a": "assistant"}[c], next(it)) for c in shape]


def _literals(template):
    """String literals of the template (what it may test content against)."""
    lits = set()
    for m in re.finditer(r"'((?:[^'\\]|\\.)*)'|\"((?:[^\"\\]|\\.)*)\"", template):
        lit = m.group(1) if m.group(1) is not None else m.group(2)
        try:
            lit = json.loads('"%s"' % lit.replace('"', '\\"').replace("\\'", "'"))
        except ValueError:
            continue
        if 1 < len(lit.strip()) <= 40:
            lits.add(lit.strip())
    return sorted(lits)


def probes(template, specials):
    """[(tag, messages)]: tag None = must render; else the restriction that may exclude it."""
    out = []
    core = ["u", "uau", "uauau", "su", "suau", "suauau"]
    texts = WORDS + UNICODE
    for n, shape in enumerate(core):
        for k in range(4):
            pool = [SYSTEMS[(n + k) % len(SYSTEMS)] if c == "s" else texts[(n * 3 + k + j) % len(texts)]
                    for j, c in enumerate(shape)]
            out.append(("system" if "s" in shape else None, _conv(shape, pool)))
    shapes = {"alternate": ["uu", "au", "uaau", "suu", "sau", "uuau"],
              "last_user": ["ua", "sua", "s", "uaua"], "system_mid": ["uasu", "ssu", "uaus"]}
    for tag, ss in shapes.items():
        for shape in ss:
            pool = [SYSTEMS[0] if c == "s" else WORDS[j % len(WORDS)] for j, c in enumerate(shape)]
            out.append((tag, _conv(shape, pool)))
    # content features, each in every role position of "suau" and "uau"
    lits = _literals(template) + [v for v in specials.values() if isinstance(v, str)]
    features = [("empty", ""), ("padded", "  padded\n"), ("padded", "\n\ntext"),
                ("padded", "text \u3000"), ("padded", " "), ("padded", "\t\n")]
    for lit in lits:
        features += [(("substr", lit), c) for c in (lit, "a " + lit + " b", lit + "\nx", "x " + lit)]
        features += [(("substr", lit), c) for c in _cut_contents(lit)]
    for a, b in itertools.product(lits, repeat=2):
        if a != b:
            features.append((("substr", a), a + " x " + b))
    for tag, content in features:
        for shape in ("suau", "uau"):
            for i in range(len(shape)):
                pool = [SYSTEMS[0] if c == "s" else WORDS[j] for j, c in enumerate(shape)]
                pool[i] = content
                conv = _conv(shape, pool)
                key = "system_first" if (shape[i] == "s" and i == 0) else conv[i]["role"]
                out.append(((tag, key) if isinstance(tag, str) else (tag[0], key, tag[1]), conv))
    return out


def _cut_contents(lit):
    """Contents that tell apart the ways a template may cut content at lit."""
    return [lit + lit, "a" + lit + "b" + lit + "c", lit + "\n\nx", "<think>\nr\n" + lit + "\n\n ans\n",
            "x" + lit, "x" + lit + "\n", "\n" + lit + "\t x", lit + "\n", " " + lit + " "]


def cut_probes(template, specials, key, sep):
    """Conversations checking a content cut at sep for key (assistant or user): the cut
    content in every turn of multi-turn conversations, beside every other message
    holding each literal (and each pair), which a template may test to change how it
    renders the cut message (Qwen3's tool responses move its last query)."""
    tag = ("substr", key, sep)
    role = "assistant" if key == "assistant" else "user"
    lits = _literals(template) + [v for v in specials.values() if isinstance(v, str)]
    cuts = [sep, "r" + sep + "ans"] + _cut_contents(sep)
    out = []
    for shape in ("uauau", "suauau", "uaua", "sua"):
        for c in cuts:
            pool = [SYSTEMS[0] if ch == "s" else WORDS[j] for j, ch in enumerate(shape)]
            conv = _conv(shape, pool)
            for m in conv:
                if m["role"] == role:
                    m["content"] = c
            out.append((tag, conv))
    others = [a for a in lits] + [a + " x " + b for a, b in itertools.product(lits, repeat=2)
                                  if a != b]
    for o in others:
        for shape in ("uau", "suauu", "uaua"):
            pool = [SYSTEMS[0] if ch == "s" else WORDS[j] for j, ch in enumerate(shape)]
            conv = _conv(shape, pool)
            for j, m in enumerate(conv):
                if m["role"] == role:
                    m["content"] = "r" + sep + "ans"
            for j, m in enumerate(conv):
                if m["role"] != role:
                    alt = [dict(x) for x in conv]
                    alt[j]["content"] = o
                    out.append((tag, alt))
    return out


def _try_cut(r, s, key, sep, cases, template, specials):
    """Model the template's handling of content holding sep as a cut (keep what follows
    the last sep, then an lstrip), if one reproduces jinja2 on every case holding sep
    and on cut_probes; True if it was recorded."""
    if sep not in s["content"][key]["refuse_substrings"] and not s["content"][key]["cut_after"]:
        relevant = [c for c in cases if c[0] == ("substr", key, sep)]
        relevant += cut_probes(template, specials, key, sep)
        for lstrip in CUT_LSTRIPS:
            cand = json.loads(json.dumps(s))
            cand["content"][key].update(cut_after=sep, cut_lstrip=lstrip)
            if not verify(r, cand, relevant):
                s["content"][key].update(cut_after=sep, cut_lstrip=lstrip)
                return True
    return False


def _restrict(s, tag):
    """Add the restriction named by tag; False if the tag names none (a core failure)."""
    if tag is None:
        return False
    if tag == "system":
        if s["system_first"] is None:
            return False
        s["system_first"] = None
        s["roles"].pop("system", None)
        return True
    if tag == "system_mid":
        return s["roles"].pop("system", None) is not None
    if tag in ("alternate", "last_user"):
        if s["rules"][tag]:
            return False
        s["rules"][tag] = True
        return True
    c = s["content"][tag[1]]
    if tag[0] == "empty" and not c["refuse_empty"]:
        c["refuse_empty"] = True
        return True
    if tag[0] == "padded" and not c["refuse_padded"]:
        c["refuse_padded"] = True
        return True
    if tag[0] == "substr" and tag[2] not in c["refuse_substrings"]:
        c["refuse_substrings"].append(tag[2])
        return True
    return False


def verify(r, s, cases):
    """Mismatches [(tag, messages, jinja text or None, structure text or None)]."""
    bad = []
    for tag, msgs in cases:
        try:
            want = r.render(msgs)
        except _Raised:
            want = None
        got, _ = render_structure(s, msgs)
        if got is not None and got != want:
            bad.append((tag, msgs, want, got))
    return bad


def end_of_turn(s, added_tokens):
    """The special token that closes an assistant turn (longest match at the start of the
    assistant suffix, else of what follows it), or ''."""
    follow = s["roles"]["assistant"]["suffix"] + s["roles"]["user"]["prefix"]
    follow = follow.lstrip(" ")
    best = ""
    for t in added_tokens:
        if t and follow.startswith(t) and len(t) > len(best):
            best = t
    return best


def compile_template(template, tokenizer_config, added_tokens=()):
    """-> the structure (a dict, JSON-serializable); raises TemplateRefused."""
    if not isinstance(template, str):
        raise TemplateRefused("chat_template is not a string (named template lists are not "
                              "supported)")
    if DATE_OPEN in template or DATE_CLOSE in template:
        raise TemplateRefused("the template holds U+E000/U+E001, which the compiled form uses")
    specials = special_tokens(tokenizer_config)
    r = Renderer(template, specials)
    cases = probes(template, specials)
    tokens = set(added_tokens) | {v for k, v in specials.items() if isinstance(v, str)}
    s = derive(r, [c for c in cases if c[0] is None], tokens)
    cut_tried = set()
    for _ in range(64):
        bad = verify(r, s, cases)
        if not bad:
            break
        tag, msgs, want, got = bad[0]
        if (isinstance(tag, tuple) and tag[0] == "substr" and tag[1] == "assistant"
                and tag not in cut_tried):
            cut_tried.add(tag)
            if _try_cut(r, s, tag[1], tag[2], cases, template, specials):
                cases += cut_probes(template, specials, tag[1], tag[2])  # verified to the end
                continue
        if tag == ("substr", "assistant", s["content"]["assistant"]["cut_after"]):
            s["content"]["assistant"].update(cut_after="", cut_lstrip="")  # the cut failed
        if not _restrict(s, tag):
            raise TemplateRefused(
                "the runtime's structure does not reproduce jinja2 on %s: jinja2 gives %r, the "
                "structure %r" % (json.dumps(msgs, ensure_ascii=False), want, got))
    else:
        raise TemplateRefused("verification did not settle")
    s["end_of_turn"] = end_of_turn(s, tokens)
    s["template_sha256"] = hashlib.sha256(template.encode()).hexdigest()
    s["verified_conversations"] = len(cases)
    return s


def compile_from_config(tokenizer_config, tokenizer_json=None):
    """tokenizer_config.json (dict) [+ tokenizer.json dict] -> structure, or None if the
    config has no chat_template. Raises TemplateRefused."""
    t = tokenizer_config.get("chat_template")
    if t is None:
        return None
    added = [a.get("content") for a in (tokenizer_json or {}).get("added_tokens", [])
             if a.get("special")]
    dec = tokenizer_config.get("added_tokens_decoder") or {}
    added += [v.get("content") for v in dec.values() if isinstance(v, dict) and v.get("special")]
    return compile_template(t, tokenizer_config, [a for a in added if isinstance(a, str)])


def config_records(tokenizer_config, tokenizer_json=None):
    """The records a converter puts into the checkpoint's tokenizer-config blob
    (docs/FORMAT.md): {"chat_template": compiled JSON bytes} for a template that
    compiles, {"chat_template_refused": reason} for one that does not (the runtime
    then says why it has no chat), {} without a template."""
    try:
        s = compile_from_config(tokenizer_config, tokenizer_json)
    except TemplateRefused as e:
        return {"chat_template_refused": str(e).encode()}
    if s is None:
        return {}
    return {"chat_template": json.dumps(s, ensure_ascii=False, sort_keys=True).encode()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compile", help="print the compiled structure of a tokenizer_config.json")
    c.add_argument("config")
    c.add_argument("--tokenizer", help="tokenizer.json (its special added tokens)")
    rr = sub.add_parser("render", help="render MESSAGES.json with jinja2 as transformers does")
    rr.add_argument("config")
    rr.add_argument("messages")
    rr.add_argument("--today", help="YYYY-MM-DD for strftime_now (default: today)")
    a = ap.parse_args(argv)
    try:
        with open(a.config, encoding="utf-8") as f:
            cfg = json.load(f)
        if a.cmd == "compile":
            tj = None
            if a.tokenizer:
                with open(a.tokenizer, encoding="utf-8") as f:
                    tj = json.load(f)
            s = compile_from_config(cfg, tj)
            if s is None:
                raise TemplateRefused("%s has no chat_template" % a.config)
            print(json.dumps(s, ensure_ascii=False, indent=1))
        else:
            with open(a.messages, encoding="utf-8") as f:
                msgs = json.load(f)
            today = (datetime.date.fromisoformat(a.today) if a.today else datetime.date.today())
            sys.stdout.write(render(cfg["chat_template"], msgs, special_tokens(cfg), today))
    except (TemplateRefused, _Raised, OSError, ValueError, KeyError) as e:
        print("chat_template: error: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
