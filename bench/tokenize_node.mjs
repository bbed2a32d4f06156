// The same measurement as bench/tokenize.c with Hugging Face's @huggingface/tokenizers under
// node: best of N runs of encode(text, {add_special_tokens: false}) on one tokenizer object.
//   node bench/tokenize_node.mjs NPM_DIR TOKENIZER_DIR FILE [RUNS]
import fs from "fs";
import path from "path";
import { pathToFileURL } from "url";

const [npmDir, dir, file, runsArg] = process.argv.slice(2);
const pkg = path.join(npmDir, "node_modules", "@huggingface", "tokenizers", "dist", "tokenizers.mjs");
const { Tokenizer } = await import(pathToFileURL(pkg).href);
const runs = Number(runsArg ?? 5);
let t0 = performance.now();
const read = (f) => JSON.parse(fs.readFileSync(path.join(dir, f), "utf8"));
const tok = new Tokenizer(read("tokenizer.json"), read("tokenizer_config.json"));
const load_s = (performance.now() - t0) / 1e3;
const bytes = fs.readFileSync(file);
const text = bytes.toString("utf8");
let best = Infinity, n = 0;
for (let r = 0; r < runs; r++) {
  t0 = performance.now();
  n = tok.encode(text, { add_special_tokens: false }).ids.length;
  best = Math.min(best, (performance.now() - t0) / 1e3);
}
console.log(JSON.stringify({ bytes: bytes.length, tokens: n, load_s: +load_s.toFixed(4),
                             encode_s: +best.toFixed(4), mb_per_s: +(bytes.length / 1e6 / best).toFixed(2) }));
