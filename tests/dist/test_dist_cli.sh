#!/bin/bash
# tests/dist/test_dist_cli.sh: `poa train` as several processes on localhost, launched the
# way torchrun and Slurm launch them (variables set by hand): the ranks meet, train, and only
# rank 0 prints progress and writes metrics and checkpoints; a rank whose rank 0 never comes,
# a bad variable, and a rank killed mid-run are prompt errors, not hangs. (That 2 ranks train
# the same parameters as 1 process on the global batch is tests/c/test_dist_train.c.)
set -u
cd "$(dirname "$0")/../.."
poa=build/poa
dir=build/tests/dist
rm -rf "$dir" && mkdir -p "$dir"
check() { if eval "$2"; then echo "PASS $1"; else echo "FAIL $1"; fi; }
# A port nobody listens on (bash's /dev/tcp connects when somebody does).
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 30000))
    (exec 3<> /dev/tcp/127.0.0.1/$p) 2> /dev/null || { echo $p; return; }
  done
}

$poa data fashion-mnist --out "$dir/fm" --limit 64 > /dev/null 2>&1
common=(tests/recipes/tiny_train.lua "data.train=$dir/fm/train" train.batch_size=8 train.threads=1
        train.loader_threads=1 train.checkpoint_every=100)

# torchrun's variables: 2 ranks, 3 steps.
port=$(free_port)
for r in 0 1; do
  RANK=$r WORLD_SIZE=2 LOCAL_RANK=$r MASTER_ADDR=127.0.0.1 MASTER_PORT=$port POA_DIST_TIMEOUT=60 \
    timeout 120 $poa train "${common[@]}" train.output=$dir/torchrun --steps 3 > "$dir/torchrun.$r.log" 2>&1 &
  pids[$r]=$!
done
wait ${pids[0]}; rc0=$?
wait ${pids[1]}; rc1=$?
check "2 ranks (torchrun variables) train 3 steps and exit cleanly" "[ $rc0 -eq 0 ] && [ $rc1 -eq 0 ]"
check "rank 0 writes the checkpoint and 3 metric lines" \
      "[ -f $dir/torchrun/checkpoint_3.safetensors ] && [ \$(grep -c '\"step\"' $dir/torchrun/metrics.jsonl) -eq 3 ]"
check "rank 0 says it runs 2 ranks x 8 images" "grep -q '2 ranks (torchrun) x 1 x 8 images' $dir/torchrun.0.log"
check "rank 1 prints no progress and writes nothing" \
      "! grep -q 'step [0-9]' $dir/torchrun.1.log && [ \$(ls $dir/torchrun | wc -l) -eq 2 ]"

# Slurm's variables, MASTER_ADDR from the node list.
port=$(free_port)
for r in 0 1; do
  SLURM_PROCID=$r SLURM_NTASKS=2 SLURM_LOCALID=$r SLURM_JOB_NODELIST=localhost MASTER_PORT=$port \
    POA_DIST_TIMEOUT=60 timeout 120 $poa train "${common[@]}" train.output=$dir/slurm --steps 1 \
    > "$dir/slurm.$r.log" 2>&1 &
  pids[$r]=$!
done
wait ${pids[0]}; rc0=$?
wait ${pids[1]}; rc1=$?
check "2 ranks (Slurm variables, master from SLURM_JOB_NODELIST) train a step" \
      "[ $rc0 -eq 0 ] && [ $rc1 -eq 0 ] && grep -q '2 ranks (slurm)' $dir/slurm.0.log && [ -f $dir/slurm/checkpoint_1.safetensors ]"

# Rank 1 alone: rank 0 never comes.
port=$(free_port)
start=$SECONDS
RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port POA_DIST_TIMEOUT=1 \
  timeout 60 $poa train "${common[@]}" train.output=$dir/alone --steps 1 > "$dir/alone.log" 2>&1
rc=$?
check "a rank whose rank 0 never comes fails after POA_DIST_TIMEOUT, naming MASTER_ADDR" \
      "[ $rc -eq 2 ] && grep -q 'cannot reach rank 0 at MASTER_ADDR=127.0.0.1 MASTER_PORT=$port' $dir/alone.log && [ $((SECONDS - start)) -lt 30 ]"
RANK=2 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 $poa train "${common[@]}" train.output=$dir/bad --steps 1 > "$dir/bad.log" 2>&1
rc=$?
check "RANK not below WORLD_SIZE is refused naming both" \
      "[ $rc -eq 2 ] && grep -q 'RANK=2 is not below WORLD_SIZE=2' $dir/bad.log"

# Rank 1 killed after the first step: rank 0 stops with an error, promptly.
port=$(free_port)
RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port POA_DIST_TIMEOUT=60 \
  timeout 120 $poa train "${common[@]}" train.output=$dir/killed optim.epochs=100 --steps 1000 > "$dir/killed.0.log" 2>&1 &
pids[0]=$!
RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port POA_DIST_TIMEOUT=60 \
  $poa train "${common[@]}" train.output=$dir/killed optim.epochs=100 --steps 1000 > "$dir/killed.1.log" 2>&1 &
pids[1]=$!
while ! grep -q '"step": 1,' $dir/killed/metrics.jsonl 2> /dev/null && kill -0 ${pids[0]} 2> /dev/null; do sleep 0.05; done
start=$SECONDS
kill -9 ${pids[1]}; wait ${pids[1]} 2> /dev/null
wait ${pids[0]}; rc0=$?
check "a rank killed mid-run: rank 0 fails promptly saying rank 1 is gone" \
      "[ $rc0 -eq 2 ] && grep -q 'rank 1 closed the connection' $dir/killed.0.log && [ $((SECONDS - start)) -lt 30 ]"

# SIGINT to rank 1 only: every rank stops at the same step and rank 0 saves a checkpoint.
port=$(free_port)
RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port POA_DIST_TIMEOUT=60 \
  timeout 120 $poa train "${common[@]}" train.output=$dir/interrupted optim.epochs=100 --steps 1000 \
  > "$dir/interrupted.0.log" 2>&1 &
pids[0]=$!
RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port POA_DIST_TIMEOUT=60 \
  $poa train "${common[@]}" train.output=$dir/interrupted optim.epochs=100 --steps 1000 \
  > "$dir/interrupted.1.log" 2>&1 &
pids[1]=$!
while ! grep -q '"step": 2,' $dir/interrupted/metrics.jsonl 2> /dev/null && kill -0 ${pids[0]} 2> /dev/null; do sleep 0.05; done
kill -INT ${pids[1]}
wait ${pids[1]}; rc1=$?
wait ${pids[0]}; rc0=$?
check "SIGINT to one rank stops every rank cleanly and rank 0 saves a checkpoint" \
      "[ $rc0 -eq 0 ] && [ $rc1 -eq 0 ] && grep -q 'signal 2, saving' $dir/interrupted.0.log && ls $dir/interrupted/checkpoint_*.safetensors > /dev/null 2>&1"

# ... and both ranks resume from it.
port=$(free_port)
for r in 0 1; do
  RANK=$r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port POA_DIST_TIMEOUT=60 \
    timeout 120 $poa train "${common[@]}" train.output=$dir/interrupted optim.epochs=100 --resume auto \
    --steps 1 > "$dir/resumed.$r.log" 2>&1 &
  pids[$r]=$!
done
wait ${pids[0]}; rc0=$?
wait ${pids[1]}; rc1=$?
last=$(ls $dir/interrupted/checkpoint_*.safetensors | sed 's/.*_\([0-9]*\)\.safetensors/\1/' | sort -n | tail -1)
check "2 ranks resume from rank 0's checkpoint and go on" \
      "[ $rc0 -eq 0 ] && [ $rc1 -eq 0 ] && grep -q 'resumed' $dir/resumed.0.log && [ \$(grep -c '\"step\"' $dir/interrupted/metrics.jsonl) -ge 3 ] && [ $last -ge 4 ]"
