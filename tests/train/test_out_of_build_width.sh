#!/bin/bash
# tests/train/test_out_of_build_width.sh: a family whose widths no recipe of the build has
# (tests/recipes/tiny_train.lua with model.width={48,80,32} model.head_dim=16: widths 48 and
# 80; the build compiles sets for the widths of recipes/*.lua and tests/recipes/*.lua only)
# trains on kernel sets that gen/emit.lua generates and the C compiler compiles at first use
# (runtime/kernels_compiled.c):
# the first run compiles (one line per width), the second takes them from the cache (one line
# each, no compile), and a broken compiler (CC=false; likewise a PATH without cc) gives one line
# per width naming the generic kernels and why, and still trains. The losses of the three runs
# agree within float tolerance. The GPU step generates its sets of the overridden widths too.
set -u
cd "$(dirname "$0")/../.."
poa=build/poa
dir=build/tests/out_of_build
rm -rf "$dir" && mkdir -p "$dir"
check() { if eval "$2"; then echo "PASS $1"; else echo "FAIL $1"; fi; }
export POA_CACHE="$dir/cache"
$poa data fashion-mnist --out "$dir/fm" --limit 100 > /dev/null 2>&1
run() { # name, env...
  local name=$1; shift
  env "$@" $poa train tests/recipes/tiny_train.lua 'model.width={48,80,32}' model.head_dim=16 \
    "data.train=$dir/fm/train" train.threads=2 \
    train.loader_threads=1 "train.output=$dir/$name" --steps 3 > "$dir/$name.log" 2>&1
  echo $?
}
count() { grep -c -- "$1" "$dir/$2.log"; }

rc=$(run first)
check "first run with widths 48 and 80 (not in the build) trains" "[ $rc -eq 0 ] && [ -f $dir/first/metrics.jsonl ]"
check "first run compiles each width's generated set once, saying where" \
      "[ \$(count 'width 48 (head_dim 16, MLP 192) has no kernel set in this build: generated it (gen/emit.lua) and compiled it with cc in .* into $POA_CACHE/kernels/vit_w48_h16_f192\..*\.so' first) = 1 ] &&
       [ \$(count 'width 80 .*compiled it with cc' first) = 1 ] && [ \$(ls $POA_CACHE/kernels/*.so | wc -l) = 2 ]"
check "no build folder is left in the cache" "[ -z \"\$(ls -A $POA_CACHE/kernels | grep -v '\.so$')\" ]"
rc=$(run second)
check "second run takes both sets from the cache: one short line each, no compile" \
      "[ $rc -eq 0 ] && [ \$(count 'kernel set from the cache' second) = 2 ] && [ \$(count 'compiled it' second) = 0 ]"
rc=$(run broken CC=false)
check "CC=false: one line per width naming the generic kernels and why, and it still trains" \
      "[ $rc -eq 0 ] && [ -f $dir/broken/metrics.jsonl ] &&
       [ \$(count \"width 48 (head_dim 16, MLP 192) runs the generic kernels (the shape read at run time, slower): no specialized set: the C compiler 'false' does not run\" broken) = 1 ] &&
       [ \$(count 'runs the generic kernels' broken) = 2 ]"
rc=$(run nocc PATH=/nonexistent)
check "a PATH without cc: the generic kernels, said once per width, and it trains" \
      "[ $rc -eq 0 ] && [ \$(count \"the C compiler 'cc' does not run (exit status 127\" nocc) = 2 ]"
loss() { sed -n 's/.*"step": \([0-9]*\), "loss": \([^,]*\),.*/\2/p' "$dir/$1/metrics.jsonl" | tr '\n' ' '; }
first=$(loss first) second=$(loss second) broken=$(loss broken)
echo "  losses: compiled $first| cached $second| generic $broken"
close() { # two loss lists agree to a relative 1e-4, three steps each
  awk -v a="$1" -v b="$2" 'BEGIN { n = split(a, x, " "); m = split(b, y, " "); if (n != 3 || m != 3) exit 1;
    for (i = 1; i <= n; i++) { d = x[i] - y[i]; if (d < 0) d = -d; if (d > 1e-4 * (y[i] < 0 ? -y[i] : y[i])) exit 1 } }'
}
check "the compiled sets' losses equal the generic kernels' (relative 1e-4)" "close '$first' '$broken'"
check "the cached sets' losses equal the compiled ones'" "[ '$first' = '$second' ]"

# The GPU step generates its kernels (NVRTC) from the recipe at start-up, with the run's
# overrides: `poa cuda plan` builds the same sources without a GPU.
$poa cuda plan tests/recipes/tiny_train.lua 'model.width={48,80,32}' model.head_dim=16 --batch 4 > "$dir/plan.log" 2>&1
rc=$?
check "poa cuda plan with model.width overridden to 48..80: the GPU kernel sets of those widths are generated" \
      "[ $rc -eq 0 ] && grep -q 'batch 4' $dir/plan.log"
check "poa cuda plan loads no CPU kernel set (its passes only lay members out: no 'poa: width' line)" \
      "! grep -q '^poa: width' $dir/plan.log"
