#!/usr/bin/env bash
# Train the project's SentencePiece BPE tokenizer.
#
#   scripts/train_tokenizer.sh DATA_DIR OUT_PREFIX
#
# Reads DATA_DIR/train.txt (stories separated by lines holding only
# <|endoftext|>), writes OUT_PREFIX.model. The separator lines are filtered out
# first so they are never learned as text. See docs/TOKENIZER.md for why each
# setting is what it is.
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 DATA_DIR OUT_PREFIX" >&2
  exit 2
fi
data_dir=$1
out_prefix=$2
train="$data_dir/train.txt"
[ -r "$train" ] || { echo "$0: cannot read $train" >&2; exit 1; }
command -v spm_train >/dev/null || { echo "$0: spm_train not found (apt-get install sentencepiece)" >&2; exit 1; }
mkdir -p "$(dirname "$out_prefix")"

out_dir=$(cd "$(dirname "$out_prefix")" && pwd)
out_name=$(basename "$out_prefix")

tmp=$(mktemp -d "${TMPDIR:-/tmp}/train_tokenizer.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# One training "sentence" per line; drop the story separators.
grep -v -x -F '<|endoftext|>' "$train" > "$tmp/train.txt"

# spm_train records the input path and model prefix inside the .model, so run
# it in the temp folder with fixed relative names: the output is then
# byte-identical from run to run. num_threads=1 and no shuffling keep the BPE
# merges deterministic. input_sentence_size is far above the ~83k lines of the
# data, so every line is used (no sampling).
( cd "$tmp" && spm_train \
  --input=train.txt \
  --model_prefix=tokenizer \
  --model_type=bpe \
  --vocab_size=4096 \
  --character_coverage=1.0 \
  --byte_fallback=true \
  --split_digits=true \
  --normalization_rule_name=identity \
  --add_dummy_prefix=true \
  --remove_extra_whitespaces=false \
  --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 \
  --input_sentence_size=100000000 \
  --shuffle_input_sentence=false \
  --max_sentence_length=16384 \
  --random_seed=1234 \
  --num_threads=1 \
  --minloglevel=1 )

# Only the .model is kept (the .vocab listing is derivable from it).
mv "$tmp/tokenizer.model" "$out_dir/$out_name.model"
echo "wrote $out_dir/$out_name.model"
