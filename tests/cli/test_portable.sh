#!/bin/bash
# tests/cli/test_portable.sh: build/poa copied alone into an empty folder runs from another
# working directory (the Lua of gen/ and models/ and the templates are built into it; recipes
# are files the user passes): poa list, poa data, a 2-step poa train and poa knn of a recipe.
# Where the system lets an unprivileged mount namespace be made (unshare -rm), the copy runs
# with this source tree hidden under an empty folder, as on another machine; either way the
# stripped copy must not name this tree.
set -u
cd "$(dirname "$0")/../.."
root=$PWD
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
check() { if eval "$2"; then echo "PASS $1"; else echo "FAIL $1"; fi; }
mkdir -p "$tmp/bin" "$tmp/work" "$tmp/empty"
strip -o "$tmp/bin/poa" build/poa
cp tests/recipes/tiny_train.lua "$tmp/work/tiny.lua"
check "the stripped binary names no path of the source tree" "! grep -qaF '$root/' '$tmp/bin/poa'"

# Runs a command in $tmp/work with POA_HOME unset, the source tree hidden when possible.
hide=""
if unshare -rm true 2>/dev/null; then hide=yes; else echo "SKIP source tree hidden: no unshare -rm here"; fi
in_work() {
  if [ -n "$hide" ]; then
    (cd "$tmp/work" && env -u POA_HOME unshare -rm sh -c 'mount --bind "$0" "$1" && shift && exec "$@"' \
      "$tmp/empty" "$root" "$@")
  else
    (cd "$tmp/work" && env -u POA_HOME "$@")
  fi
}
poa=$tmp/bin/poa
if [ -n "$hide" ]; then
  check "the source tree is hidden from the copied binary" "in_work sh -c '[ ! -e $root/gen ]'"
fi
in_work $poa list tiny.lua > "$tmp/list" 2>&1
check "copied poa list" "grep -q '^tiny_train: 9 members' $tmp/list"
in_work $poa data fashion-mnist --out fm --limit 200 > "$tmp/data.log" 2>&1
check "copied poa data" "[ -d $tmp/work/fm/train ] && [ -d $tmp/work/fm/val ]"
in_work $poa train tiny.lua data.train=fm/train train.output=./run train.threads=2 train.loader_threads=2 \
  --steps 2 > "$tmp/train.log" 2>&1
check "copied poa train: 2 steps and a checkpoint" "[ -f $tmp/work/run/checkpoint_2.safetensors ]" ||
  head -c 600 "$tmp/train.log"
in_work $poa knn run/checkpoint_2.safetensors --data fm --nets 32x2,96x4 --train-limit 60 --val-limit 30 \
  --out knn > "$tmp/knn.log" 2>&1
check "copied poa knn: a table of the two members and the heatmap" \
      "[ \$(grep -Ec '^\| (32x2|96x4) ' $tmp/knn.log) -eq 2 ] && [ -s $tmp/work/knn/knn_heatmap.png ]"
grep -h "FAIL\|rror" "$tmp"/*.log | head -5
