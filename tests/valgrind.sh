#!/usr/bin/env bash
# A generation and a --ppl run of a shipped model under valgrind (memcheck), with a
# ./run built without AVX-512 (valgrind cannot decode it): any invalid read or
# write, use of uninitialised memory or definite leak fails. `make valgrind` runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-build-vg/run}
export MIXATTN_ISA=avx2 # the kernels' AVX2 path: valgrind decodes AVX2, not AVX-512
MODEL=weights/gqa.bin
VG=(valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect
    --show-leak-kinds=definite,indirect)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "valgrind: generation"
"${VG[@]}" "$RUN" "$MODEL" -p "Once upon a time" -n 12 -t 0 --threads 1 >"$tmp/gen.out"
test -s "$tmp/gen.out"

echo "valgrind: --ppl on 1 story"
awk 'BEGIN{n=0} {print} $0=="<|endoftext|>"{if(++n==1) exit}' weights/eval_stories.txt >"$tmp/one.txt"
"${VG[@]}" "$RUN" "$MODEL" --ppl "$tmp/one.txt" -c 64 --threads 1 | tee "$tmp/ppl.out"
grep -q "ppl: stories=1 " "$tmp/ppl.out"

echo "valgrind: bad inputs"
printf 'MIXATTN\0garbage' >"$tmp/bad.bin"
for args in "$tmp/bad.bin" "$MODEL --tokens 99999999" "$MODEL -p x -c 1"; do
    rc=0
    # shellcheck disable=SC2086
    "${VG[@]}" "$RUN" $args -n 2 --threads 1 >/dev/null 2>"$tmp/err" || rc=$?
    if [ "$rc" = 0 ]; then echo "valgrind: '$args' should have failed"; exit 1; fi
    if [ "$rc" = 99 ]; then cat "$tmp/err"; exit 1; fi
    grep -q "^run: error: " "$tmp/err"
done
echo "valgrind: clean"
