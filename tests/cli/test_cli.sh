#!/bin/bash
# tests/cli/test_cli.sh: the poa command line as a user meets it: poa list names the ViT-S,
# ViT-B and ViT-L members of the paper's family; bad input (an unknown sub-network, a
# truncated or foreign parameter file, a wrong recipe field, an unknown command) gives a
# clear error that names it and a non-zero exit, never a crash.
set -u
cd "$(dirname "$0")/../.."
poa=build/poa
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
check() { if eval "$2"; then echo "PASS $1"; else echo "FAIL $1"; fi; }
expect_error() { # name, pattern, command...
  local name=$1 pattern=$2; shift 2
  "$@" > "$tmp/out" 2> "$tmp/err"; local rc=$?
  if [ $rc -ne 0 ] && [ $rc -lt 128 ] && grep -q -- "$pattern" "$tmp/err"; then echo "PASS $name"
  else echo "FAIL $name: exit $rc, stderr: $(head -c 300 "$tmp/err")"; fi
}

$poa list recipes/vit_l16_ee1200.lua > "$tmp/list"
check "poa list: 143 members, 11 kernel sets, 572 elastic slots" \
      "head -1 $tmp/list | grep -q '143 members, 11 kernel sets (distinct widths), 572 elastic slots'"
check "poa list names ViT-S 384x12" "grep -Eq '^ +384 +12 +6 +21.68 .*ViT-S$' $tmp/list"
check "poa list names ViT-B 768x12" "grep -Eq '^ +768 +12 +12 +85.82 .*ViT-B$' $tmp/list"
check "poa list names ViT-L 1024x24 (the intact net)" "grep -Eq '^ +1024 +24 +16 +303.35 .*intact +ViT-L$' $tmp/list"
$poa list quickstart > "$tmp/list" 2>&1
check "poa list quickstart in the source tree is the shipped recipe, not the ./quickstart script" \
      "[ -x quickstart ] && head -1 $tmp/list | grep -q '^quickstart: 9 members'"

$poa program recipes/vit_l16_ee1200.lua --net ViT-L > "$tmp/program"
check "poa program ViT-L: the forward's GFLOPs are poa list's 61.55" "sed -n 3p $tmp/program | grep -q ' 61.55[0-9]* GFLOPs at batch 1'"
check "poa program ViT-L: 24 blocks of the intact net, symbolic batch" \
      "grep -q 'arena [0-9]*\\*B elements' $tmp/program && grep -q 'layernorm_forward(block23.ln2' $tmp/program && grep -q 'blocks.23.mlp.fc2.linear.weight' $tmp/program"
$poa program recipes/vit_l16_ee1200.lua --net ViT-L --backward > "$tmp/program"
check "poa program --backward ViT-L: 122.95 GFLOPs (twice the forward's less the patch embedding's dx), 3 recomputes per block" \
      "sed -n 3p $tmp/program | grep -q ' 122.95[0-9]* GFLOPs at batch 1' && [ \$(grep -c '(recompute block' $tmp/program) = 72 ]"
$poa program recipes/quickstart.lua --net 64x2 --crop local --batch 3 > "$tmp/program"
check "poa program --crop local --batch 3: resampled position table, sizes at batch 3" \
      "grep -q '^batch 3; arena' $tmp/program && grep -q 'gemm   pos+64 = 1 \\* resample' $tmp/program && grep -q 'rows=15)' $tmp/program"
expect_error "poa program: a wrong crop is named" "crop middle: global or local" \
  $poa program recipes/quickstart.lua --net 64x2 --crop middle
$poa program recipes/vit_l16_ee1200.lua --net ViT-L --device gpu > "$tmp/program"
check "poa program --device gpu ViT-L: 61.55 GFLOPs, 48 fused residual + LayerNorm, bf16 casts and bias epilogues, launches listed" \
      "sed -n 3p $tmp/program | grep -q ' 61.55[0-9]* GFLOPs at batch 1' && [ \$(grep -c 'kernel residual_layernorm_forward(' $tmp/program) = 48 ] && grep -q 'kernel to_bf16(cast_a, block0.ln1' $tmp/program && grep -q '(epilogue)' $tmp/program && grep -q 'launch attention_forward (vit_w1024_h64_f4096.cu) grid' $tmp/program"
$poa program recipes/vit_l16_ee1200.lua --net ViT-L --device gpu --precision fp32 --backward > "$tmp/program"
check "poa program --device gpu --precision fp32 --backward ViT-L: 122.95 GFLOPs, 48 fused backward ops, no casts" \
      "sed -n 3p $tmp/program | grep -q ' 122.95[0-9]* GFLOPs at batch 1' && [ \$(grep -c 'kernel residual_layernorm_backward(' $tmp/program) = 48 ] && ! grep -q to_bf16 $tmp/program"
expect_error "poa program: a wrong device is named" "device tpu: cpu or gpu" \
  $poa program recipes/quickstart.lua --net 64x2 --device tpu
expect_error "poa program: --precision only with --device gpu" "only the GPU program has one" \
  $poa program recipes/quickstart.lua --net 64x2 --precision fp32

fixtures=tests/golden/fixtures
forward=(forward tests/recipes/tiny_vit.lua --input $fixtures/vit_elastic_64x3.safetensors --images input.global --out "$tmp/y.safetensors")
expect_error "unknown sub-network is named with the family's range" "unknown sub-network '48x3'.*widths 32..96 step 32" \
  $poa "${forward[@]}" --params $fixtures/vit_tiny_params.safetensors --net 48x3
head -c 5000 $fixtures/vit_tiny_params.safetensors > "$tmp/truncated.safetensors"
expect_error "truncated parameter file is named" "truncated.safetensors: truncated" \
  $poa "${forward[@]}" --params "$tmp/truncated.safetensors" --net 64x3
expect_error "a file without the backbone names the missing tensor" "missing tensor 'patch_embed.proj.weight'" \
  $poa "${forward[@]}" --params $fixtures/vit_elastic_64x3.safetensors --net 64x3
printf 'return { name = "x", model = { family = "vit", widht = { 32, 64, 32 } } }\n' > "$tmp/bad.lua"
expect_error "a wrong recipe field is named" "field 'model.widht': unknown field" $poa list "$tmp/bad.lua"
expect_error "a missing recipe file is named" "nonexistent.lua" $poa list "$tmp/nonexistent.lua"
expect_error "an unknown command is refused" "unknown command 'frobnicate'" $poa frobnicate
$poa "${forward[@]}" --params $fixtures/vit_tiny_params.safetensors --net 64x3 2> "$tmp/err"
check "poa forward of a member writes the output file" "[ -s $tmp/y.safetensors ]"
$poa data fashion-mnist --out "$tmp/new/nested/fm" --limit 50 > /dev/null 2> "$tmp/err"
check "poa data creates missing parent folders" "[ -d $tmp/new/nested/fm/train ] && [ -d $tmp/new/nested/fm/val ]"
$poa cuda plan tests/recipes/tiny_train.lua --batch 8 > "$tmp/plan" 2>&1
check "poa cuda plan reports the device memory of a step (state, arenas, peak)" \
      "grep -q 'batch 8' $tmp/plan && grep -Eq '^  peak of one step.* [0-9]+\.[0-9] MiB$' $tmp/plan && grep -q '^  state' $tmp/plan"
expect_error "poa cuda plan names a wrong recipe field" "optim.base_lrr" $poa cuda plan tests/recipes/tiny_train.lua optim.base_lrr=1

# --version, help and the exit statuses (README "Exit statuses": 0 done, 1 usage, 2 failed).
status() { "$@" > "$tmp/out" 2> "$tmp/err"; echo $?; }
rc=$(status $poa --version)
check "poa --version: git describe, the build options, the Lua sources, the GPU and NVRTC found or not" \
      "[ $rc -eq 0 ] && head -1 $tmp/out | grep -Eq '^poa [0-9a-z]' && grep -q '^build: .*CUDA headers' $tmp/out &&
       grep -q '^Lua sources: embedded ([0-9]* files' $tmp/out && grep -Eq '^(GPU: |no GPU)' $tmp/out &&
       sed -n '/^Lua sources/,\$p' $tmp/out | grep -qi nvrtc"
# OpenBLAS's kernels (runtime/backend_cpu.c): where OpenBLAS would fall back to its SSE3
# Prescott kernels on a CPU with AVX2 (Debian 12's 0.3.21 on Sapphire/Emerald Rapids), poa
# chooses better ones; a core type the user gives is kept.
env -u OPENBLAS_CORETYPE $poa --version > "$tmp/blas" 2>&1
check "poa --version names OpenBLAS's kernels; never Prescott on a CPU with AVX2" \
      "grep -q '^BLAS: OpenBLAS .*; kernels [A-Za-z]' $tmp/blas &&
       { ! grep -qw avx2 /proc/cpuinfo || ! grep -q 'kernels Prescott' $tmp/blas; }"
OPENBLAS_CORETYPE=Haswell $poa --version > "$tmp/blas" 2>&1
check "OPENBLAS_CORETYPE given by the user is kept (Haswell)" \
      "grep -q 'kernels Haswell, OPENBLAS_CORETYPE=Haswell' $tmp/blas"
rc=$(status $poa help train)
check "poa help train: its options, exit 0" "[ $rc -eq 0 ] && grep -q -- '--resume PATH|auto' $tmp/out && grep -q 'log_every' $tmp/out"
rc=$(status $poa knn --help)
check "poa knn --help: its options, exit 0" "[ $rc -eq 0 ] && grep -q -- '--train-limit' $tmp/out"
rc=$(status $poa help frobnicate)
check "poa help of an unknown command: usage error (1)" "[ $rc -eq 1 ] && grep -q \"unknown command 'frobnicate'\" $tmp/err"
rc=$(status $poa)
check "poa without a command: usage on stderr, exit 1" "[ $rc -eq 1 ] && grep -q '^usage: poa' $tmp/err"
rc=$(status $poa list)
check "a missing argument is a usage error (1)" "[ $rc -eq 1 ]"
rc=$(status $poa train tests/recipes/tiny_train.lua --frobnicate)
check "an unknown option is a usage error (1), named" "[ $rc -eq 1 ] && grep -q -- '--frobnicate' $tmp/err"
rc=$(status $poa list "$tmp/bad.lua")
check "a bad recipe field fails with 2" "[ $rc -eq 2 ]"

# Overrides and recipe values that are not literals of the field's type are refused with the
# field's name and the value, never dropped (issue 12).
expect_error "override train.elastic=flase is refused naming the field and value" \
  "field 'train.elastic' takes true or false; 'flase' is not a Lua literal" \
  $poa cuda plan tests/recipes/tiny_train.lua train.elastic=flase
expect_error "override optim.base_lr=abc is refused naming the field and value" \
  "field 'optim.base_lr' takes a number; 'abc' is not a Lua literal" \
  $poa cuda plan tests/recipes/tiny_train.lua optim.base_lr=abc
expect_error "override optim.base_lr=\"1\" (a string for a number) is refused" \
  "field 'optim.base_lr' takes a number; '\"1\"' is a string" \
  $poa cuda plan tests/recipes/tiny_train.lua 'optim.base_lr="1"'
expect_error "an elastic run of a one-member family is refused naming train.elastic (it divided by zero)" \
  "field 'train.elastic': the family (model.width, model.depth) has no member but the intact 48x2" \
  $poa cuda plan tests/recipes/tiny_train.lua 'model.width={48,48,16}' 'model.depth={2,2,1}' model.head_dim=16
expect_error "a negative loss.distill_weight is refused naming the field" \
  "field 'loss.distill_weight': expected a weight >= 0" \
  $poa cuda plan tests/recipes/tiny_train.lua loss.distill_weight=-1
expect_error "a misspelt loss.distill_weight is refused naming the field" \
  "field 'loss.distill_wieght': unknown field" \
  $poa cuda plan tests/recipes/tiny_train.lua loss.distill_wieght=0
expect_error "override of an unknown section is refused" "field 'optimm': unknown section" \
  $poa cuda plan tests/recipes/tiny_train.lua optimm.base_lr=1
expect_error "an override table holding a non-literal is refused" "field 'heads.prototypes' takes a {table}; '{64,x}'" \
  $poa cuda plan tests/recipes/tiny_train.lua 'heads.prototypes={64,x}'
sed 's/^}$/  train = { elastic = flase },\n}/' tests/recipes/tiny_train.lua > "$tmp/typo.lua"
grep -q "elastic = flase" "$tmp/typo.lua" || echo "FAIL could not write the typo recipe"
expect_error "a recipe file's non-literal value is refused naming the field and value" \
  "field 'train.elastic': 'flase' is not a value" $poa list "$tmp/typo.lua"
$poa cuda plan tests/recipes/tiny_train.lua --batch 2 train.output=$tmp/runs/a train.draws=step \
  'model.depth={2,3,1}' optim.base_lr=2e-3 > /dev/null 2> "$tmp/err"; rc=$?
check "bare words for string fields, tables and numbers are accepted" "[ $rc -eq 0 ] && ! [ -s $tmp/err ]"

# poa train's first line: the family's member count and, apart, the sampling pool.
$poa train recipes/quickstart.lua "data.train=$tmp/new/nested/fm/train" train.output=$tmp/qs \
  train.batch_size=8 train.threads=2 train.loader_threads=2 --steps 1 > /dev/null 2> "$tmp/train"
check "poa train of the quickstart recipe announces 9 members and a pool of 35 slots" \
  "grep -q '^poa train: quickstart, 9 members (elastic draws from a pool of 35 slots)' $tmp/train"
