#!/usr/bin/env bash
# Reproduce the embedded default model (coda_model/default_model) from scratch on a CPU.
#
#   bash train/recipes/default_model/run.sh            # data -> tokenizer -> AR warm-up -> adapt ->
#                                                     # diffusion pre-train -> mid-train -> longer
#                                                     # mid-train (twice) -> export
#   COMPARE=1 bash train/recipes/default_model/run.sh  # also the rivals: diffusion from scratch (stage-4
#                                                     # budget) and AR+FIM on the same rows (stage-3
#                                                     # budget, then continued to the full budget)
#
# Every training stage checkpoints every 50 steps and this script passes --resume, so running it
# again after an interruption continues where it stopped. Raw data, shards and checkpoints go to
# data/default_model and runs/default_model (both gitignored). Wall time on a shared 2-core CPU:
# ~2 min data + ~45 min training for stages 1-4 (busy CPU) + ~70 min for stage 5 (one idle core);
# see model/default_model/MODEL_CARD.md for the measured numbers.
set -euo pipefail
cd "$(dirname "$0")/../../.."
PY=${PY:-.venv/bin/python}
CT=${CT:-.venv/bin/coda-train}
D=data/default_model
R=runs/default_model
C=configs/default_model
HERE=train/recipes/default_model
OUT=${OUT:-model/default_model}

stage() { echo "== $(date -u +%H:%M:%S) $*"; }
train() {  # train CMD CONFIG OUT_DIR [--set ...]: resume when the run already has checkpoints
  local cmd=$1 cfg=$2 dir=$3; shift 3
  local resume=(); [ -d "$dir/checkpoints" ] && resume=(--resume)
  "$CT" "$cmd" --config "$cfg" --set run.out_dir="$dir" --set run.progress=false "$@" "${resume[@]}"
}

stage "data: permissive code on this machine, dedup, decontaminate, hold out packages"
# SOURCES=model/default_model/DATA_CARD.md limits the corpus to the packages the shipped model used
[ -f $D/stats.json ] || $PY $HERE/build_data.py --out $D ${SOURCES:+--sources "$SOURCES"}
stage "tokenizer: byte-level BPE, 8192 ids, CoDA special tokens"
[ -f $R/tokenizer/tokenizer.json ] || $PY $HERE/train_tokenizer.py --data $D --vocab 8192 --out $R/tokenizer
for split in train heldout; do
  "$CT" data --tokenizer $R/tokenizer --out $D/shards/$split $D/$split.jsonl
done

stage "1/6 AR warm-up (causal, 50% FIM rows)"
train pretrain $C/ar_warmup.toml $R/ar
"$CT" export $R/ar --out $R/ar_hf
stage "2/6 adapt: AR -> CoDA (bidirectional, mask row kept)"
[ -f $R/adapted/config.json ] || "$CT" adapt --from $R/ar_hf --out $R/adapted
stage "3/6 diffusion pre-training"
train pretrain $C/diffusion_pretrain.toml $R/diffusion_pre
stage "4/6 diffusion mid-training with the curriculum"
train midtrain $C/diffusion_midtrain.toml $R/diffusion_mid
stage "5/6 longer mid-training on the last curriculum mixture (~70 min on one idle core)"
train midtrain $C/diffusion_long.toml $R/diffusion_long
[ -f $R/diffusion_long_bf16/config.json ] || "$CT" export $R/diffusion_long --out $R/diffusion_long_bf16 --dtype bfloat16
stage "6/6 stage 5 again from its bf16 export, new data order (~60 min on one core)"
train midtrain $C/diffusion_cont.toml $R/diffusion_cont
stage "export -> $OUT (bf16)"
"$CT" export $R/diffusion_cont --out "$OUT" --dtype bfloat16

if [ "${COMPARE:-0}" = "1" ]; then
  SHAPE=(--set model.init=random --set model.tokenizer=$R/tokenizer --set model.hidden_size=256
         --set model.intermediate_size=768 --set model.num_hidden_layers=4 --set model.num_attention_heads=4
         --set model.num_key_value_heads=2 --set model.head_dim=64 --set model.max_position_embeddings=4096)
  stage "rival 1: the same diffusion stages from random init (no AR warm-up)"
  train pretrain $C/diffusion_pretrain.toml $R/scratch_pre "${SHAPE[@]}"
  train midtrain $C/diffusion_midtrain.toml $R/scratch_mid --set model.init=$R/scratch_pre
  "$CT" export $R/scratch_mid --out $R/scratch_hf
  stage "rival 2: AR+FIM on the same rows after the same warm-up (causal next-token loss, 50% FIM)"
  train pretrain $C/diffusion_pretrain.toml $R/arfim_pre --set model.init=$R/ar_hf --set objective.kind=ar \
    --set objective.fim_probability=0.5
  "$CT" export $R/arfim_pre --out $R/arfim_pre_hf
  stage "rival 2, continued to the shipped model's budget: stages 4 + 5 = 150 + 2000 steps of AR+FIM (~85 min)"
  train midtrain $C/diffusion_long.toml $R/arfim_long --set model.init=$R/arfim_pre_hf --set objective.kind=ar \
    --set objective.fim_probability=0.5 --set run.steps=2150
  "$CT" export $R/arfim_long --out $R/arfim_long_hf
  stage "rival 2, continued as stage 6 was: 1,600 more steps from its bf16 export, seed 6 (~70 min)"
  [ -f $R/arfim_long_bf16/config.json ] || "$CT" export $R/arfim_long --out $R/arfim_long_bf16 --dtype bfloat16
  train midtrain $C/diffusion_cont.toml $R/arfim_cont --set model.init=$R/arfim_long_bf16 --set objective.kind=ar \
    --set objective.fim_probability=0.5
  "$CT" export $R/arfim_cont --out $R/arfim_cont_hf
fi
stage "done"
