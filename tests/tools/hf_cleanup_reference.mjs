// Reference for --decode-ids' clean_up_tokenization_spaces: Hugging Face's JavaScript
// tokenizers (@huggingface/tokenizers) encode each text of TEXTS with
// add_special_tokens = false and decode the ids with the options left to the
// tokenizer_config.json (llama3 sets clean_up_tokenization_spaces true, the other three
// false), as transformers' decode(ids) does. Not part of the test run: its output is
// committed as tests/fixtures/tokenizer/cleanup.json (tests/python/test_tokenizer_hf.py).
//
//   mkdir -p /tmp/npm && (cd /tmp/npm && npm install @huggingface/tokenizers)
//   node tests/tools/hf_cleanup_reference.mjs /tmp/npm ../shared/data/tokenizers \
//        > tests/fixtures/tokenizer/cleanup.json
import fs from "fs";
import path from "path";
import { pathToFileURL } from "url";

const TEXTS = [
  "Hello , world . Is it ? Yes ! Really !",
  "I 'm sure it 's fine ; we 've seen they 're here , is n't it ? do n't",
  "a ' b ' c '' d ' ",
  "  . leading, ,, .. ?? !! trailing .",
  "no spaces:a.b,c?d!e'f n't'm's've're",
  "tabs\t.\tand\nnewlines\n, stay . ",
  "Grüße , 日本語 。 emoji 👍 ! x ' y",
  "code: f(a , b) . g ( ) ? ' s '  's   'm",
];
const [npmDir, tokDir] = process.argv.slice(2);
const pkgDir = path.join(npmDir, "node_modules", "@huggingface", "tokenizers");
const { Tokenizer } = await import(pathToFileURL(path.join(pkgDir, "dist", "tokenizers.mjs")).href);
const version = JSON.parse(fs.readFileSync(path.join(pkgDir, "package.json"), "utf8")).version;
const out = { generated_by: `@huggingface/tokenizers ${version} under node ${process.version}: ` +
  "encode(text, {add_special_tokens: false}).ids; decoded = decode(ids) (the config's " +
  "clean_up_tokenization_spaces)", tokenizers: {} };
for (const name of ["llama3", "qwen3", "deepseek_v3", "mistral"]) {
  const read = (f) => JSON.parse(fs.readFileSync(path.join(tokDir, name, f), "utf8"));
  const tc = read("tokenizer_config.json");
  const tok = new Tokenizer(read("tokenizer.json"), tc);
  out.tokenizers[name] = { clean_up_tokenization_spaces: tc.clean_up_tokenization_spaces,
    cases: TEXTS.map((text) => {
      const ids = tok.encode(text, { add_special_tokens: false }).ids;
      return { text, ids, decoded: tok.decode(ids) };
    }) };
}
process.stdout.write(JSON.stringify(out, null, 1) + "\n");
