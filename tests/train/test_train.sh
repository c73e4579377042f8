#!/bin/bash
# tests/train/test_train.sh: poa train end to end on a small Fashion-MNIST tree with the
# tiny_train recipe: the loss falls over a short run; a run killed (SIGKILL) after a
# checkpoint and resumed gives bit-identical checkpoints and the same losses as an
# uninterrupted run; SIGINT saves a checkpoint and exits cleanly; truncated and foreign
# checkpoints are refused with a message naming the file.
set -u
cd "$(dirname "$0")/../.."
poa=build/poa
dir=build/tests/train
rm -rf "$dir" && mkdir -p "$dir"
check() { if eval "$2"; then echo "PASS $1"; else echo "FAIL $1"; fi; }

$poa data fashion-mnist --out "$dir/fm" --limit 400 > /dev/null 2>&1
common=(tests/recipes/tiny_train.lua "data.train=$dir/fm/train" train.batch_size=16 train.threads=2
        train.loader_threads=2 optim.epochs=4 train.official_epoch_length=10 train.checkpoint_every=4
        optim.base_lr=0.02 optim.warmup_epochs=0.5)

# An uninterrupted run of 12 steps.
$poa train "${common[@]}" train.output=$dir/a --steps 12 > "$dir/a.log" 2>&1
check "uninterrupted run finishes" "[ -f $dir/a/checkpoint_12.safetensors ]"
loss() { sed -n 's/.*"step": \([0-9]*\), "loss": \([^,]*\),.*/\1 \2/p' "$1"; }
first=$(loss $dir/a/metrics.jsonl | head -3 | awk '{s += $2} END {print s / 3}')
last=$(loss $dir/a/metrics.jsonl | tail -3 | awk '{s += $2} END {print s / 3}')
echo "  mean loss of steps 1-3: $first, of steps 10-12: $last"
check "the loss falls over a short run" "awk 'BEGIN {exit !($last < $first)}'"
# The learning diagnostics (runtime/train_diagnostics.h): every step's targets and gradients, and
# the CLS features' cosine, spread and rank at step 1 and every 10th.
targets=$(grep -c '"target_entropy": [0-9].*"dout_koleo": \[' $dir/a/metrics.jsonl)
ranked=$(sed -n 's/.*"step": \([0-9]*\),.*"cls_rank": [0-9].*/\1/p' $dir/a/metrics.jsonl | tr '\n' ' ')
echo "  steps with target diagnostics: $targets, with the CLS rank: $ranked"
check "metrics.jsonl: target entropy and backbone-output gradients every step, CLS rank at steps 1 and 10" \
      "[ '$targets' = 12 ] && [ '$ranked' = '1 10 ' ]"

# Killed with SIGKILL after its step-4 checkpoint, then resumed.
$poa train "${common[@]}" train.output=$dir/b --steps 12 > "$dir/b.log" 2>&1 &
pid=$!
while [ ! -f $dir/b/checkpoint_4.safetensors ] && kill -0 $pid 2>/dev/null; do sleep 0.05; done
kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
latest=$(ls $dir/b/checkpoint_*.safetensors | sed 's/.*_\([0-9]*\)\.safetensors/\1/' | sort -n | tail -1)
echo "  killed; latest checkpoint at step $latest"
$poa train "${common[@]}" train.output=$dir/b --resume auto --steps $((12 - latest)) >> "$dir/b.log" 2>&1
check "resumed run reaches step 12" "[ -f $dir/b/checkpoint_12.safetensors ]"
# Every tensor bit-identical (the data section) and the same header once the run's own output
# directory, recorded among the overrides, is left out.
data_of() { local n; n=$(od -An -tu8 -N8 "$1" | tr -d ' '); tail -c +$((n + 9)) "$1"; }
header_of() { local n; n=$(od -An -tu8 -N8 "$1" | tr -d ' '); head -c $((n + 8)) "$1" | tail -c +9 | sed 's|train.output=[^\\"]*||'; }
check "resumed checkpoint is bit-identical to the uninterrupted one" \
      "cmp -s <(data_of $dir/a/checkpoint_12.safetensors) <(data_of $dir/b/checkpoint_12.safetensors) && cmp -s <(header_of $dir/a/checkpoint_12.safetensors) <(header_of $dir/b/checkpoint_12.safetensors)"
check "resumed losses equal the uninterrupted losses" \
      "diff <(loss $dir/a/metrics.jsonl | sort -u -k1,1n) <(loss $dir/b/metrics.jsonl | sort -k1,1n | awk '{l[\$1] = \$0} END {for (s in l) print l[s]}' | sort -k1,1n) > /dev/null"

# SIGINT: a checkpoint at the current step and a clean exit.
$poa train "${common[@]}" train.output=$dir/c --steps 40 train.checkpoint_every=100 > "$dir/c.log" 2>&1 &
pid=$!
while ! grep -q '"step": 2,' $dir/c/metrics.jsonl 2>/dev/null && kill -0 $pid 2>/dev/null; do sleep 0.05; done
kill -INT $pid; wait $pid; rc=$?
check "SIGINT exits cleanly" "[ $rc -eq 0 ]"
check "SIGINT leaves a checkpoint" "ls $dir/c/checkpoint_*.safetensors > /dev/null 2>&1 && grep -q 'signal 2, saving' $dir/c.log"

# Bad checkpoints.
head -c 100000 $dir/a/checkpoint_12.safetensors > $dir/truncated.safetensors
$poa train "${common[@]}" train.output=$dir/d --resume $dir/truncated.safetensors --steps 1 > $dir/d.log 2>&1
check "a truncated checkpoint is refused naming the file" "grep -q 'truncated.safetensors' $dir/d.log && ! [ -f $dir/d/checkpoint_1.safetensors ]"
$poa train "${common[@]}" train.output=$dir/e --resume tests/golden/fixtures/vit_tiny_params.safetensors --steps 1 > $dir/e.log 2>&1
check "a foreign file is refused as not a poa checkpoint" "grep -q 'not a poa checkpoint' $dir/e.log"
$poa train "${common[@]}" train.output=$dir/f --resume $dir/a/checkpoint_12.safetensors model.depth='{2,3,1}' --steps 1 > $dir/f.log 2>&1
check "a checkpoint of another network is refused" "grep -q 'another network' $dir/f.log"
$poa train "${common[@]}" optim.base_lrr=1 --steps 1 > $dir/g.log 2>&1
check "a wrong recipe field is named" "grep -q \"optim.base_lrr\" $dir/g.log"

# A run trained with model overrides (the baseline of one member) is evaluated by poa knn with
# the recipe and overrides recorded in its checkpoint.
$poa train "${common[@]}" 'model.width={32,32,32}' 'model.depth={2,2,1}' train.elastic=false \
  train.output=$dir/h --steps 2 > $dir/h.log 2>&1
$poa knn $dir/h/checkpoint_2.safetensors --data $dir/fm --nets all --train-limit 60 --val-limit 30 \
  --out $dir/h/knn > $dir/h_knn.log 2>&1
check "poa knn applies the overrides a checkpoint was trained with" \
      "[ \$(grep -c '^| 32x2 ' $dir/h_knn.log) -eq 1 ] && [ \$(grep -c '^| [0-9]' $dir/h_knn.log) -eq 1 ]"
# Its k-NN point joins the run's metrics.jsonl, and poa plot <run dir> draws the curves.
check "poa knn of a run's checkpoint appends its k-NN point (step 2, 32x2) to metrics.jsonl" \
      "grep -q '^{\"step\": 2, \"knn\": \"32x2\", \"k\": 20, \"top1\": [0-9.]*' $dir/h/metrics.jsonl"
$poa plot $dir/h > $dir/h_plot.log 2>&1
check "poa plot <run dir>: curves.svg and curves.png of 2 steps and 1 k-NN point" \
      "grep -q '^curves: 2 steps, 1 k-NN points' $dir/h_plot.log && [ -s $dir/h/curves.svg ] && head -c 8 $dir/h/curves.png | grep -q PNG"
mkdir -p $dir/r
for s in 1 2 3 2 3 4; do echo "{\"step\": $s, \"loss\": 1.5, \"dino\": 1, \"lr\": 0.001}"; done > $dir/r/metrics.jsonl
$poa plot $dir/r > $dir/r_plot.log 2>&1
check "poa plot of a run resumed from step 1 after logging step 3 draws steps 1-4 once each" \
      "grep -q '^curves: 4 steps, 0 k-NN points' $dir/r_plot.log"

# The device: with no GPU, --device auto says so once and trains on the CPU; --device gpu is an
# error naming the reason; a wrong --device is named. (Where a GPU is present, auto takes it.)
if ! $poa cuda info 2>&1 | grep -q "^GPU"; then
  $poa train "${common[@]}" train.output=$dir/i --steps 1 > $dir/i.log 2>&1
  check "no GPU: --device auto runs on the CPU backend and says so once" \
        "[ -f $dir/i/checkpoint_1.safetensors ] && [ \$(grep -c 'running on the CPU backend' $dir/i.log) -eq 1 ]"
  $poa train "${common[@]}" train.output=$dir/j --steps 1 --device gpu > $dir/j.log 2>&1
  check "no GPU: --device gpu is an error that says why" "grep -q 'no GPU' $dir/j.log && ! ls $dir/j/checkpoint_* > /dev/null 2>&1"
fi
$poa train "${common[@]}" train.output=$dir/k --steps 1 --device tpu > $dir/k.log 2>&1
check "a wrong --device is named" "grep -q -- '--device tpu' $dir/k.log"

# --init: student and teacher from a state dict under the official names (the recorded official
# step's student; tests/c/test_official_step.c checks the values it gives).
init=tests/golden/fixtures/official_step/student_init.safetensors
official=(tests/recipes/official_step.lua "data.train=$dir/fm/train" train.threads=2 train.loader_threads=2)
$poa train "${official[@]}" train.output=$dir/l --init $init --steps 1 > $dir/l.out 2> $dir/l.log
check "--init FILE starts the student and teacher from it and trains" \
      "grep -q 'initialised from $init' $dir/l.log && [ -f $dir/l/checkpoint_1.safetensors ]"
$poa train "${official[@]}" train.output=$dir/l --init $init --resume auto --steps 1 > $dir/l2.out 2> $dir/l2.log
check "--init with a checkpoint to resume from says it is not used" \
      "grep -q 'resumed .*checkpoint_1.safetensors.*--init $init is for a fresh start: not used' $dir/l2.log"
$poa train "${common[@]}" train.output=$dir/m --init $init --steps 1 > $dir/m.out 2> $dir/m.log
check "--init of another family's weights is refused naming the file and the tensor" \
      "grep -q \"student_init.safetensors: tensor 'backbone.*' has shape\" $dir/m.log && ! [ -f $dir/m/checkpoint_1.safetensors ]"

# --resume auto takes the newest checkpoint, whatever order the directory lists them in.
mkdir -p $dir/n && cp $dir/a/checkpoint_*.safetensors $dir/n/
$poa train "${common[@]}" train.output=$dir/n --resume auto --steps 1 > $dir/n.out 2> $dir/n.log
newest=$(ls $dir/a/checkpoint_*.safetensors | sed 's/.*_\([0-9]*\)\.safetensors/\1/' | sort -n | tail -1)
check "--resume auto resumes the newest checkpoint (step $newest of $(ls $dir/a/checkpoint_*.safetensors | wc -l))" \
      "grep -q 'resumed $dir/n/checkpoint_$newest.safetensors at step $newest' $dir/n.log"

# --steps takes a positive whole number; anything else is refused, not read as "no limit".
for bad in abc 0 -3 5x; do
  $poa train "${common[@]}" train.output=$dir/o --steps $bad > $dir/o.out 2> $dir/o.log
  check "--steps $bad is refused naming it" "grep -q -- '--steps $bad: expected a positive whole number' $dir/o.log && ! [ -d $dir/o ]"
done
