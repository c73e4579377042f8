#!/bin/bash
# tests/cli/test_pick.sh: `poa pick` as a user meets it on the quickstart family: the members
# under a parameter or GFLOPs budget (gen/space.lua's counts), their top-1 from a k-NN table
# in poa knn's format and the Pareto front marked; --max-latency times each member's exported
# C program (built with make and cc) from a checkpoint; bad values and combinations are
# refused naming them.
set -u
cd "$(dirname "$0")/../.."
poa=build/poa
dir=build/tests/pick_cli
rm -rf "$dir" && mkdir -p "$dir"
check() { if eval "$2"; then echo "PASS $1"; else echo "FAIL $1"; fi; }
refused() { # name, pattern, pick arguments...
  local name=$1 pattern=$2; shift 2
  $poa pick "$@" > "$dir/stdout" 2> "$dir/stderr"; local rc=$?
  if [ $rc -ne 0 ] && grep -q -- "$pattern" "$dir/stderr"; then echo "PASS $name"
  else echo "FAIL $name: exit $rc, stderr: $(head -c 300 "$dir/stderr")"; fi
}

$poa pick recipes/quickstart.lua --max-params 0.5M > "$dir/params" 2>&1; rc=$?
# quickstart: 64x2 0.11M, 64x3 0.16M, 64x4 0.21M, 128x2 0.42M fit 0.5M; 128x3 (0.62M) does not
check "--max-params 0.5M: the four members under 0.5 M parameters, no front without --knn" \
      "[ $rc -eq 0 ] && grep -q '4 of 9 members fit 0.5 M parameters' $dir/params && grep -qE '^ +128 +2 +0.42' $dir/params \
       && ! grep -qE '^ +128 +3' $dir/params && grep -q 'no --knn table' $dir/params"
cat > "$dir/knn.csv" <<'CSV'
member,width,depth,params,gflops,k,top1,top5,features
pixels,0,0,0,0,20,80.3500,90.0000,pixels
64x2,64,2,113920,0.00196,20,60.5000,80.0000,trained
64x2,64,2,113920,0.00196,20,55.0000,80.0000,init
64x3,64,3,164000,0.00300,20,62.0000,80.0000,trained
64x4,64,4,214144,0.00400,20,61.5000,80.0000,trained
128x2,128,2,420000,0.00700,20,61.0000,80.0000,trained
128x3,128,3,622976,0.01100,20,65.0000,80.0000,trained
64x3,64,3,164000,0.00300,10,70.0000,80.0000,trained
CSV
$poa pick recipes/quickstart.lua --max-gflops 0.012 --knn "$dir/knn.csv" > "$dir/gflops" 2>&1; rc=$?
# front against GFLOPs: 64x2 (60.5), 64x3 (62.0), 128x3 (65.0); 64x4 and 128x2 are dominated by 64x3
check "--max-gflops with --knn: top-1 at k = 20 of the trained rows, the Pareto front marked" \
      "[ $rc -eq 0 ] && grep -qE '^ +64 +2 .* 60.50 +\*' $dir/gflops && grep -qE '^ +64 +3 .* 62.00 +\*' $dir/gflops \
       && grep -qE '^ +128 +3 .* 65.00 +\*' $dir/gflops && grep -qE '^ +64 +4 .* 61.50$' $dir/gflops \
       && grep -qE '^ +128 +2 .* 61.00$' $dir/gflops && ! grep -qE '^ +128 +4' $dir/gflops"
$poa pick recipes/quickstart.lua --max-gflops 0.012 --knn "$dir/knn.csv" --k 10 > "$dir/k10" 2>&1
check "--k 10 reads the k = 10 rows (64x3 alone in the table: the front)" \
      "grep -qE '^ +64 +3 .* 70.00 +\*' $dir/k10 && grep -qE '^ +64 +2 .* - *$' $dir/k10"

refused "a budget that is not a number is named" "--max-params abc: a positive number" recipes/quickstart.lua --max-params abc
refused "a negative budget is named" "--max-gflops -1: a positive number" recipes/quickstart.lua --max-gflops -1
refused "a latency of 0 is named" "--max-latency 0: a positive number" recipes/quickstart.lua --max-latency 0
refused "two budgets are refused" "one budget at a time" recipes/quickstart.lua --max-params 1M --max-gflops 1
refused "no budget is a usage error" "usage: poa pick" recipes/quickstart.lua
refused "--k that is not a whole number is named" "--k 2.5: a positive whole number" recipes/quickstart.lua --max-params 1M --k 2.5
refused "a missing k-NN table is named" "--knn $dir/none.csv: cannot read" recipes/quickstart.lua --max-params 1M --knn "$dir/none.csv"
printf 'width,top1\n64,50\n' > "$dir/other.csv"
refused "a table that is not poa knn's is named" "other.csv: line 1 is 'width,top1'" recipes/quickstart.lua --max-params 1M --knn "$dir/other.csv"
printf 'member,width,depth,params,gflops,k,top1,top5,features\n64x2,64,2,1,1,twenty,60,80,trained\n' > "$dir/bad.csv"
refused "a bad row of the table is named with its line" "bad.csv: line 2" recipes/quickstart.lua --max-params 1M --knn "$dir/bad.csv"
refused "a k the table does not have is named" "no trained member at k = 7 (k in the table: 10, 20)" recipes/quickstart.lua --max-params 1M --knn "$dir/knn.csv" --k 7
refused "--max-latency needs a checkpoint" "--max-latency needs --checkpoint" recipes/quickstart.lua --max-latency 5
refused "--threads without --max-latency is refused" "--threads: only with --max-latency" recipes/quickstart.lua --max-params 1M --threads 2
refused "an unknown recipe is named" "nonexistent" recipes/nonexistent.lua --max-params 1M
refused "an unknown option is named" "unknown option --fast" recipes/quickstart.lua --max-params 1M --fast

$poa pick recipes/quickstart.lua --max-params 1000 > "$dir/none" 2>&1
check "a budget under the smallest member: none fits, and it says so" \
      "grep -q '0 of 9 members fit 0.001 M parameters' $dir/none && grep -q '(none: the smallest member is over the budget)' $dir/none"

# --max-latency: the random quickstart checkpoint of tests/c/test_export_c.c (tests/run runs it first)
ckpt=build/tests/export_c/quickstart/checkpoint.safetensors
if [ ! -f $ckpt ]; then
  echo "SKIP --max-latency: no $ckpt (written by build/tests/test_export_c)"
  exit 0
fi
$poa pick recipes/quickstart.lua --max-latency 1000 --checkpoint $ckpt --runs 3 --work "$dir/work" > "$dir/latency" 2> "$dir/latency.err"; rc=$?
check "--max-latency: every member's exported C program built and timed (median of 3 runs), all 9 fit 1000 ms" \
      "[ $rc -eq 0 ] && grep -q '9 of 9 members fit 1000 ms (the exported C programs, batch 1, 32 px, 1 thread, median of 3 runs)' $dir/latency \
       && [ -x $dir/work/192x4/poa_member ] && [ \$(grep -c 'median' $dir/latency.err) -eq 9 ]"
echo "  measured (ms): $(awk '$1 ~ /^[0-9]+$/ { printf "%sx%s %s  ", $1, $2, $5 }' "$dir/latency")"
