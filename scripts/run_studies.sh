#!/usr/bin/env bash
# The reproduction studies of the README "Results" table (issue 6), one after another, each in a
# fixed directory so that running this script again resumes: finished jobs are skipped
# (trainer.skip_finished), interrupted ones continue from their last checkpoint.
#   bash scripts/run_studies.sh [study ...]      (default: all, in the order below)
# Studies: ptb ptb_seeds ett mr mr_optuna mr_optuna_2x mr_optuna_lm mr_optuna_lm_2x mr_lm mr_lm_2x char char512 adding copy copy_arjovsky copy_arjovsky_variants copy_arjovsky_code adding400 recurrences shakespeare_cpu. Logs: logs/<study>.log. Then:
#   rnnlab-aggregate multirun/<study>/main   (tables and plots; see README "Results")
set -uo pipefail
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/.."
TRAIN=${RNNLAB_TRAIN:-.venv/bin/rnnlab-train}
mkdir -p logs
export CI=${CI:-true}  # no progress bars in the logs
PYTHON=$(dirname "$TRAIN")/python
# Runs carried from an earlier machine through git (scripts/carry_runs.py): unpacked where this
# machine has none, so that their studies go on where they stopped.
[ -z "${RNNLAB_CARRIED:-}" ] && "$PYTHON" scripts/carry_runs.py restore
export RNNLAB_CARRIED=1

run() {  # run <study> <rnnlab-train args...>
  local name=$1; shift
  echo "=== $name: $(date -u +%FT%TZ) $TRAIN $*" | tee -a "logs/$name.log"
  "$TRAIN" "$@" >>"logs/$name.log" 2>&1
  echo "=== $name: exit $? at $(date -u +%FT%TZ)" | tee -a "logs/$name.log"
}

studies=("$@")
[ ${#studies[@]} -eq 0 ] && studies=(ptb ett mr char adding copy adding400 recurrences)
for study in "${studies[@]}"; do
  case $study in
    ptb) run ptb experiment=ptb_zaremba_small ;;
    # Three seeds, each scored at the last epoch too (trainer.score_final; issue 17): ~1 h each.
    ptb_seeds) run ptb_seeds -m experiment=ptb_zaremba_small seed=0,1,2 trainer.score_final=true \
      hydra.sweep.dir=multirun/ptb_zaremba_small/seeds ;;
    ett) run ett -m experiment=ett_lstma hydra.sweep.dir=multirun/ett_lstma/main ;;
    mr) run mr -m experiment=mr_10fold hydra.sweep.dir=multirun/mr_10fold/main ;;
    # Nested model selection: per test fold, an Optuna study on that fold's inner validation
    # split (conf/hparams_search/mr_optuna.yaml); 24 trials of 0.5-3 min per fold.
    # MR_FOLDS="0 2" picks folds (default: all ten, in order).
    # After each fold its completed trials are packed for git (scripts/carry_runs.py: the study
    # outlives a machine; an unfinished fold is packed by hand before the machine goes).
    mr_optuna) for fold in ${MR_FOLDS:-0 1 2 3 4 5 6 7 8 9}; do
        run "${MR_LOG:-mr_optuna}" -m experiment=mr_sentiment hparams_search=mr_optuna \
          task.fold="$fold" hydra.sweep.dir="multirun/mr_optuna/fold_$fold" &&
          "$PYTHON" scripts/carry_runs.py save "multirun/mr_optuna/fold_$fold"
      done ;;
    # Pretraining (Dai & Le 2015) per fold: the LM on the fold's training sentences, then the
    # Bi-LSTM + attention classifier warm-started from it and, for comparison, from scratch.
    mr_lm) for fold in ${MR_FOLDS:-0 1 2 3 4 5 6 7 8 9}; do
        run "${MR_LOG:-mr_lm}" experiment=mr_lm_pretrain task.fold="$fold" \
          hydra.run.dir="multirun/mr_lm_pretrain/fold_$fold"
        run "${MR_LOG:-mr_lm}" experiment=mr_lm_init task.fold="$fold" \
          hydra.run.dir="multirun/mr_lm_init/fold_$fold"
        run "${MR_LOG:-mr_lm}" experiment=mr_lm_init task.fold="$fold" trainer.init_from=null \
          hydra.run.dir="multirun/mr_lm_init_scratch/fold_$fold"
      done ;;
    # The nested search with every trial warm-started from the fold's LM (run first; a finished
    # one is skipped): conf/hparams_search/mr_optuna_lm.yaml.
    mr_optuna_lm) for fold in ${MR_FOLDS:-0 1 2 3 4 5 6 7 8 9}; do
        run "${MR_LOG:-mr_optuna_lm}" experiment=mr_lm_pretrain task.fold="$fold" \
          hydra.run.dir="multirun/mr_lm_pretrain/fold_$fold"
        run "${MR_LOG:-mr_optuna_lm}" -m experiment=mr_sentiment hparams_search=mr_optuna_lm \
          task.fold="$fold" hydra.sweep.dir="multirun/mr_optuna_lm/fold_$fold"
      done ;;
    # mr_optuna, mr_optuna_lm or mr_lm two folds at a time on a machine of two or more cores: even folds
    # pinned to core 0, odd folds to core 1, each on one thread (1.19x the throughput of one job
    # on two threads on the 2-core AMD EPYC; an MR trial was bit-identical across thread counts,
    # the language model agrees to 6 digits: XLA's matmuls sum in another order).
    mr_optuna_2x|mr_optuna_lm_2x|mr_lm_2x)
      for half in "0 0 2 4 6 8" "1 1 3 5 7 9"; do
        set -- $half
        core=$1; shift
        MR_FOLDS="$*" MR_LOG="${study%_2x}_core$core" RNNLAB_NATIVE_SPLIT=none \
          taskset -c "$core" bash "$SELF" "${study%_2x}" &
      done
      wait ;;
    char) run char experiment=char_lm_shakespeare_2layer ;;
    # A 2-layer LSTM of 512 units, seeds 0-2 (issue 17: <= 1.47 nats/char): ~35 min a seed.
    char512) run char512 -m experiment=char_lm_shakespeare_lstm512 \
      hydra.sweep.dir=multirun/char_lm_shakespeare_lstm512/main ;;
    adding) run adding -m experiment=adding_long_lags hydra.sweep.dir=multirun/adding_long_lags/main ;;
    copy) run copy -m experiment=copy_lags hydra.sweep.dir=multirun/copy_lags/main ;;
    # The LSTM at lag 100 in Arjovsky et al.'s setting, 10x copy_lags' steps (issue 17).
    copy_arjovsky) run copy_arjovsky -m experiment=copy_arjovsky \
      hydra.sweep.dir=multirun/copy_arjovsky/main ;;
    # What copy_arjovsky leaves out of the paper's setting, seed 0: no gradient clipping, 128
    # units, Adam, and 5x the steps.
    copy_arjovsky_variants) run copy_arjovsky_variants -m experiment=copy_arjovsky seed=0 \
      optim.grad_clip_norm=null model.cell.hidden_size=40,128 \
      hydra.sweep.dir=multirun/copy_arjovsky/no_clip hydra/launcher=local_parallel
      run copy_arjovsky_variants -m experiment=copy_arjovsky seed=0 optim=adam \
      optim.learning_rate=0.001 model.cell.hidden_size=128 trainer.steps=100000 \
      hydra.sweep.dir=multirun/copy_arjovsky/adam_100k ;;
    # Arjovsky et al.'s code's training details (all-outputs loss, element-wise clipping, RMSProp
    # from 1e-3, Glorot recurrent init), 3 seeds; then each ingredient reverted alone, seed 0.
    copy_arjovsky_code) run copy_arjovsky_code -m experiment=copy_arjovsky_code \
      hydra.sweep.dir=multirun/copy_arjovsky_code/main
      for revert in task.loss_positions=recall "optim.grad_clip_value=null optim.grad_clip_norm=1" \
          optim.initial_scale=0 model.cell.recurrent_init=orthogonal; do
        # shellcheck disable=SC2086  # each entry is one or two overrides
        run copy_arjovsky_code -m experiment=copy_arjovsky_code seed=0 $revert \
          hydra.sweep.dir=multirun/copy_arjovsky_code/ablation
      done
      # Where the curve goes: 5x the steps (2M sequences), 3 seeds.
      run copy_arjovsky_code -m experiment=copy_arjovsky_code trainer.steps=100000 \
        trainer.checkpoint_every=10000 hydra.sweep.dir=multirun/copy_arjovsky_code/steps_100k ;;
    # The LSTM at T = 400 with 3x the steps (384k sequences; Hochreiter & Schmidhuber used
    # ~200k at T = 500): 2000 steps left it at the baseline.
    adding400) run adding400 -m experiment=adding_long_lags model=lstm task.length=400 \
      trainer.steps=6000 hydra.sweep.dir=multirun/adding_long_lags/lstm_t400_6000steps ;;
    # Eight recurrences at matched parameter counts on six generated tasks, two jobs at a time.
    recurrences) run recurrences -m experiment=study_recurrences hydra/launcher=local_parallel ;;
    # minGRU, minLSTM, LSTM, GRU in Feng et al.'s block on Tiny Shakespeare, nanoGPT's protocol
    # at a 2-core-CPU size (4 blocks of 192, batch 32, 1500 steps; the preset: 6 x 384, 64, 5000).
    shakespeare_cpu) run shakespeare_cpu -m experiment=shakespeare_minrnns model.num_layers=4 \
      model.embed_dim=192 model.cell.hidden_size=192 trainer.batch_size=32 trainer.steps=1500 \
      hydra.sweep.dir=multirun/shakespeare_minrnns/cpu_w192 hydra/launcher=local_parallel ;;
    *) echo "unknown study $study (ptb ptb_seeds ett mr mr_optuna mr_optuna_2x mr_optuna_lm mr_optuna_lm_2x mr_lm mr_lm_2x char char512 adding copy copy_arjovsky copy_arjovsky_variants copy_arjovsky_code adding400 recurrences shakespeare_cpu)"; exit 2 ;;
  esac
done
