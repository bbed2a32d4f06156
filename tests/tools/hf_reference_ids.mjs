// Reference token ids from Hugging Face's own JavaScript tokenizers (@huggingface/tokenizers),
// for the texts in tests/fixtures/tokenizer/texts.json and the four real tokenizers in
// ../shared/data/tokenizers, plus the variants of tests/fixtures/tokenizer/derived.json (a
// real file with some parts replaced, for pipeline parts no real file here uses). Not part of the test run: its output is committed as
// tests/fixtures/tokenizer/hf_ids.json, which tests/python/test_tokenizer_hf.py checks against.
//
//   mkdir -p /work/scratch-npm && (cd /work/scratch-npm && npm install @huggingface/tokenizers)
//   node tests/tools/hf_reference_ids.mjs /work/scratch-npm ../shared/data/tokenizers \
//        tests/fixtures/tokenizer/texts.json > tests/fixtures/tokenizer/hf_ids.json
import fs from "fs";
import path from "path";
import { pathToFileURL } from "url";

const [npmDir, tokDir, textsPath] = process.argv.slice(2);
const pkgDir = path.join(npmDir, "node_modules", "@huggingface", "tokenizers");
const { Tokenizer } = await import(pathToFileURL(path.join(pkgDir, "dist", "tokenizers.mjs")).href);
const version = JSON.parse(fs.readFileSync(path.join(pkgDir, "package.json"), "utf8")).version;
const texts = JSON.parse(fs.readFileSync(textsPath, "utf8"));

const out = {
  generated_by: `@huggingface/tokenizers ${version} under node ${process.version}: ` +
    "encode(text, {add_special_tokens: false}).ids; decoded = decode(ids, " +
    "{skip_special_tokens: false, clean_up_tokenization_spaces: false})",
  tokenizers: {},
};
const derived = JSON.parse(fs.readFileSync(path.join(path.dirname(textsPath), "derived.json"), "utf8"));
for (const name of ["llama3", "qwen3", "deepseek_v3", "mistral", ...Object.keys(derived)]) {
  const base = derived[name] ? derived[name].base : name;
  const read = (f) => JSON.parse(fs.readFileSync(path.join(tokDir, base, f), "utf8"));
  const tj = read("tokenizer.json");
  if (derived[name]) Object.assign(tj, derived[name].set);
  const tok = new Tokenizer(tj, read("tokenizer_config.json"));
  const per = {};
  for (const { name: tname, text } of texts) {
    const ids = tok.encode(text, { add_special_tokens: false }).ids;
    const decoded = ids.length ? tok.decode(ids, { skip_special_tokens: false,
                                                   clean_up_tokenization_spaces: false }) : "";
    per[tname] = { ids, decoded };
  }
  out.tokenizers[name] = per;
}
// one line per text keeps the file small and diffs readable
const lines = ["{", `"generated_by": ${JSON.stringify(out.generated_by)},`, `"tokenizers": {`];
const names = Object.keys(out.tokenizers);
names.forEach((n, i) => {
  lines.push(`${JSON.stringify(n)}: {`);
  const keys = Object.keys(out.tokenizers[n]);
  keys.forEach((k, j) => {
    lines.push(`${JSON.stringify(k)}: ${JSON.stringify(out.tokenizers[n][k])}${j + 1 < keys.length ? "," : ""}`);
  });
  lines.push(`}${i + 1 < names.length ? "," : ""}`);
});
lines.push("}", "}");
process.stdout.write(lines.join("\n") + "\n");
