#!/bin/bash
# tests/cli/test_export.sh: `poa export` as a user meets it, on a 2-step tiny_train checkpoint:
# it writes model.safetensors and config.json and says what it took; a truncated or foreign
# checkpoint, an unknown member, a member or recipe of another family (with --what c too), bad
# --sizes and an unknown naming are refused with a message naming them, and write nothing;
# --what c|cuda|all write the programs (built and compared: tests/c/test_export_c.c); a program that
# cannot be generated leaves --out as it was.
# (The numbers: tests/c/test_export.c; timm: tests/golden/test_export_timm.sh.)
set -u
cd "$(dirname "$0")/../.."
poa=build/poa
dir=build/tests/export_cli
rm -rf "$dir" && mkdir -p "$dir"
check() { if eval "$2"; then echo "PASS $1"; else echo "FAIL $1"; fi; }
refused() { # name, expected exit status, pattern, export arguments... (always --out $dir/out)
  local name=$1 status=$2 pattern=$3; shift 3
  rm -rf "$dir/out"
  $poa export "$@" --out "$dir/out" > "$dir/stdout" 2> "$dir/stderr"; local rc=$?
  if [ $rc -eq "$status" ] && grep -q -- "$pattern" "$dir/stderr" && [ ! -e "$dir/out" ]; then echo "PASS $name"
  else echo "FAIL $name: exit $rc (expected $status), out $( [ -e "$dir/out" ] && echo written || echo absent), stderr: $(head -c 300 "$dir/stderr")"; fi
}

$poa data fashion-mnist --out "$dir/fm" --limit 64 > /dev/null 2>&1
$poa train tests/recipes/tiny_train.lua "data.train=$dir/fm/train" "train.output=$dir/run" train.threads=1 \
  train.loader_threads=1 --steps 2 --device cpu > "$dir/train.log" 2>&1
ckpt=$dir/run/checkpoint_2.safetensors
check "a 2-step checkpoint to export" "[ -f $ckpt ]"

$poa export $ckpt --net 64x3 --out "$dir/a/b" > "$dir/stdout" 2> "$dir/stderr"
check "poa export writes model.safetensors and config.json (making the folder)" \
      "[ -s $dir/a/b/model.safetensors ] && grep -q '\"embed_dim\": 64, \"depth\": 3, \"num_heads\": 2' $dir/a/b/config.json"
check "poa export says the member, its blocks and alpha" \
      "grep -q 'member 64x3 of the teacher of .*(step 2): blocks 0,1,3 of 4, alpha 1.5 baked in' $dir/stdout"
check "the header carries the recipe, member, step, source and mean/std" \
      "head -c 4000 $dir/a/b/model.safetensors | grep -q '\"recipe_name\":\"tiny_train\".*\"source\":\"teacher\",\"step\":\"2\",\"member\":\"64x3\".*\"mean\":\"0.485,0.456,0.406\",\"std\":\"0.229,0.224,0.225\"'"
check "no heads unless --heads" "[ ! -e $dir/a/b/heads.safetensors ]"
mkdir "$dir/plain"
check "the folder gets a plain mkdir's mode (not the staging folder's 0700)" \
      "[ \"\$(stat -c %a $dir/a/b)\" = \"\$(stat -c %a $dir/plain)\" ]"
$poa export $ckpt --net ViT-S --out "$dir/c" --heads > /dev/null 2> "$dir/stderr"
check "a name the family does not have is refused" "grep -q \"unknown sub-network 'ViT-S' in tiny_train\" $dir/stderr && [ ! -e $dir/c ]"

head -c 30000 $ckpt > "$dir/truncated.safetensors"
refused "a truncated checkpoint is named" 2 "truncated.safetensors: truncated" "$dir/truncated.safetensors" --net 64x3
refused "a foreign file is not a poa checkpoint" 2 "vit_tiny_params.safetensors: not a poa checkpoint" \
  tests/golden/fixtures/vit_tiny_params.safetensors --net 64x3
refused "a foreign file is not a poa checkpoint, with --recipe too" 2 "safetensors_small.safetensors: not a poa checkpoint" \
  tests/golden/fixtures/safetensors_small.safetensors --recipe tests/recipes/tiny_train.lua --net 64x3
printf 'not a tensor file at all' > "$dir/text.safetensors"
refused "a file that is not safetensors is named" 2 "text.safetensors" "$dir/text.safetensors" --net 64x3
refused "an unknown member is named with the family's range" 2 "unknown sub-network '48x3' in tiny_train: widths 32..96 step 32" \
  $ckpt --net 48x3
refused "a member of another family is refused" 2 "unknown sub-network '640x16' in tiny_train" $ckpt --net 640x16
refused "a recipe of another family is refused" 2 "checkpoint_2.safetensors: written for another network" \
  $ckpt --recipe recipes/small_vit.lua --net 128x3
refused "a missing checkpoint is named" 2 "nonexistent.safetensors" "$dir/nonexistent.safetensors" --net 64x3
$poa export $ckpt --net 64x3 --what cuda --out "$dir/cuda" > "$dir/stdout" 2> "$dir/stderr"
check "--what cuda: the weights and the CUDA program (poa_member.cu), no C forward" \
      "grep -q 'the CUDA program for 32, 16 px' $dir/stdout && [ -s $dir/cuda/poa_member.cu ] && [ ! -e $dir/cuda/poa_member.c ] \
       && grep -q '^all: poa_member_cuda$' $dir/cuda/Makefile && [ -s $dir/cuda/model.safetensors ]"
$poa export $ckpt --net 64x3 --what all --out "$dir/all" > "$dir/stdout" 2> "$dir/stderr"
check "--what all: the weights, the C and the CUDA programs" \
      "grep -q 'the C and CUDA programs for 32, 16 px' $dir/stdout && [ -s $dir/all/poa_member.cu ] && [ -s $dir/all/poa_member.c ] \
       && grep -q '^all: poa_member poa_member_cuda$' $dir/all/Makefile"
refused "--what c: a truncated checkpoint is named" 2 "truncated.safetensors: truncated" "$dir/truncated.safetensors" \
  --net 64x3 --what c
refused "--what c: an unknown member is named" 2 "unknown sub-network '48x3' in tiny_train" $ckpt --net 48x3 --what c
refused "--what c: a member of another family is named" 2 "unknown sub-network '640x16' in tiny_train" \
  $ckpt --net 640x16 --what c
refused "--what c: a recipe of another family is refused" 2 "checkpoint_2.safetensors: written for another network" \
  $ckpt --recipe recipes/small_vit.lua --net 128x3 --what c
refused "--sizes that are not multiples of the patch size are named" 2 "--sizes 32,20: up to 16 image sizes, positive multiples of the patch size 8" \
  $ckpt --net 64x3 --what c --sizes 32,20
refused "--sizes given twice is named" 2 "--sizes 32,32: 32 is given twice" $ckpt --net 64x3 --what c --sizes 32,32
refused "--sizes without a program is refused" 1 "--sizes 32: only for --what c|cuda|all" $ckpt --net 64x3 --sizes 32
$poa export $ckpt --net 64x3 --what c --sizes 24 --out "$dir/c24" > "$dir/stdout" 2> "$dir/stderr"
check "--what c --sizes 24: the program for 24 px, and the weights" \
      "grep -q 'the C program for 24 px' $dir/stdout && grep -q 'POA_MEMBER_SIZES { 24 }' $dir/c24/poa_member.h && [ -s $dir/c24/model.safetensors ]"
# A program that cannot be generated (gen/export_c.lua broken on purpose, through POA_HOME): the
# weights were written before the program is generated, yet --out is not made, an existing --out
# keeps what it had, and no staging folder is left beside it.
mkdir -p "$dir/src" && cp -r gen templates recipes models runtime "$dir/src/" && mkdir -p "$dir/src/tests" && cp -r tests/recipes "$dir/src/tests/"
sed -i 's/^function export_c.files(spec)$/&\n  error("export_c: broken on purpose (tests\/cli\/test_export.sh)", 0)/' "$dir/src/gen/export_c.lua"
POA_HOME=$dir/src $poa export $ckpt --net 64x3 --what c --out "$dir/broken/out" > "$dir/stdout" 2> "$dir/stderr"; rc=$?
check "a failed program generation is reported and leaves no --out and no staging folder" \
      "[ $rc -ne 0 ] && grep -q 'broken on purpose' $dir/stderr && [ ! -e $dir/broken/out ] && [ -z \"\$(ls -A $dir/broken)\" ]"
mkdir -p "$dir/kept" && echo before > "$dir/kept/model.safetensors"
POA_HOME=$dir/src $poa export $ckpt --net 64x3 --what c --out "$dir/kept" > "$dir/stdout" 2> "$dir/stderr"; rc=$?
check "a failed program generation leaves an existing --out as it was" \
      "[ $rc -ne 0 ] && [ \"\$(ls -A $dir/kept)\" = model.safetensors ] && grep -qx before $dir/kept/model.safetensors \
       && [ -z \"\$(ls -d $dir/kept.partial-* 2> /dev/null)\" ]"
$poa export $ckpt --net 64x3 --what c --out "$dir/kept" > "$dir/stdout" 2> "$dir/stderr"
check "an export into an existing folder replaces its files and leaves no staging folder" \
      "[ -s $dir/kept/poa_member.c ] && ! grep -qx before $dir/kept/model.safetensors && [ -z \"\$(ls -d $dir/kept.partial-* 2> /dev/null)\" ]"
refused "--what of an unknown kind is refused" 1 "--what onnx: unknown (weights, c, cuda or all)" $ckpt --net 64x3 --what onnx
refused "--names of an unknown naming is refused" 1 "unknown names 'hf'" $ckpt --net 64x3 --names hf
refused "an unknown option is refused" 1 "unknown option --fast" $ckpt --net 64x3 --fast

$poa help export > "$dir/help" 2>&1; rc=$?
check "poa help export: its options, exit 0" "[ $rc -eq 0 ] && grep -q -- '--names timm' $dir/help && grep -q -- '--student' $dir/help"
