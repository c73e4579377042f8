#!/bin/bash
# tests/cli/test_logs.sh: progress that reads well in a batch job's log. With stdout to a file,
# poa train writes one complete, flushed line per train.log_every steps and no carriage return;
# poa data and poa knn write complete progress lines too; on a terminal (a pseudo-terminal from
# script(1)) poa train redraws one line in place instead.
set -u
cd "$(dirname "$0")/../.."
poa=build/poa
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
check() { if eval "$2"; then echo "PASS $1"; else echo "FAIL $1"; fi; }
no_cr() { ! grep -q $'\r' "$1"; }
ends_with_newline() { [ -s "$1" ] && [ "$(tail -c 1 "$1" | od -An -c | tr -d ' ')" = '\n' ]; }

$poa data fashion-mnist --out "$tmp/fm" --limit 300 > "$tmp/data.out" 2> "$tmp/data.err"
check "poa data to a file: complete progress lines of both splits, no carriage return" \
      "no_cr $tmp/data.out && grep -Eq '^poa data: train 300/300 images \(100%\) \| [0-9.]+ images/s \| in [0-9.]+ s$' $tmp/data.out &&
       grep -q '^poa data: val 300/300 images (100%)' $tmp/data.out && ends_with_newline $tmp/data.out"

common=(tests/recipes/tiny_train.lua "data.train=$tmp/fm/train" train.threads=2 train.loader_threads=2)
# 5 steps logged every 2: steps 2, 4 and the last, 5.
$poa train "${common[@]}" train.output=$tmp/a train.log_every=2 --steps 5 > "$tmp/a.out" 2> "$tmp/a.err"
steps=$(sed -n 's#^step \([0-9]*\)/10 | .* img/s | ETA [0-9:]* | loss .*#\1#p' "$tmp/a.out" | tr '\n' ' ')
check "poa train to a file: one progress line per train.log_every steps (2 4 5), each a whole line" \
      "[ '$steps' = '2 4 5 ' ] && [ \$(grep -c '^step ' $tmp/a.out) -eq 3 ] && ends_with_newline $tmp/a.out"
[ "$steps" = "2 4 5 " ] || { echo "  steps logged: '$steps'"; head -c 500 "$tmp/a.out"; }
check "poa train to files: no carriage return on stdout or stderr" "no_cr $tmp/a.out && no_cr $tmp/a.err"

# Each line is flushed when written: after SIGKILL (no exit to flush stdio) the log has them.
$poa train "${common[@]}" train.output=$tmp/b train.log_every=1 train.checkpoint_every=2 --steps 10 \
  > "$tmp/b.out" 2> /dev/null &
pid=$!
for _ in $(seq 300); do [ -f "$tmp/b/checkpoint_2.safetensors" ] && break; sleep 0.1; done
kill -9 $pid 2> /dev/null; wait $pid 2> /dev/null
check "poa train's progress lines are flushed as they are written (present after SIGKILL)" \
      "grep -q '^step 2/10 | ' $tmp/b.out"

$poa knn "$tmp/a/checkpoint_5.safetensors" --data "$tmp/fm" --nets 32x2 --train-limit 60 --val-limit 30 \
  --out "$tmp/knn" > "$tmp/knn.out" 2> "$tmp/knn.err"
check "poa knn to a file: complete decoding and feature progress lines, no carriage return" \
      "no_cr $tmp/knn.out && no_cr $tmp/knn.err && grep -q '^poa knn: decoding 90/90 images (100%) | ' $tmp/knn.out &&
       grep -q '^poa knn: 32x2 features 90/90 images (100%) | ' $tmp/knn.out"

# On a terminal: the step line is redrawn in place (carriage return, erase to the end of line).
if script -qec true /dev/null > /dev/null 2>&1; then
  script -qec "$poa train ${common[*]} train.output=$tmp/c train.log_every=1 --steps 3 2> /dev/null" /dev/null \
    > "$tmp/tty.out"
  redraws=$(grep -o $'\rstep [0-9]*/10 ' "$tmp/tty.out" | wc -l)
  ended=$(grep -c $'step 3/10 .*\e\\[K\r*$' "$tmp/tty.out")
  check "poa train on a terminal: three redraws of one line, then a newline" \
        "[ $redraws -eq 3 ] && [ $ended -eq 1 ] && [ \$(wc -l < $tmp/tty.out) -eq 1 ]"
else
  echo "SKIP poa train on a terminal: no script(1) here"
fi
