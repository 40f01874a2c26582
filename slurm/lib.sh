# slurm/lib.sh: an experiment's stages as shell functions, sourced by the Slurm batch scripts
# (slurm/*.sbatch), the submitter (slurm/submit) and the local runner (scripts/run-job), so a
# cluster run and a local run execute the same commands.
#
# job_load FILE reads a jobs/*.job file (KEY=VALUE lines, see jobs/demo.job) over the defaults
# below. Paths in it are relative to the repository root, where everything here runs.
# Each stage has a run function (stage_*) and a check (verify_*) returning 0 when its output
# is complete, valid and made from the current inputs, 1 when it is missing, 2 when it is there
# but stale or damaged (the stage's --verify says why).

job_defaults() {
  DATASETS=datasets.cfg
  RANKS=2 THREADS_PER_RANK=1 LAUNCHER=mpirun
  EPOCHS=2 MAX_SPLIT=6 MAX_BOXES=20 CROP_SEED=0 CROP_SCALE=1
  # the students trained from the one teacher: "patches" (CLIPSelf's grid tiles) and/or
  # "proposals" (region proposals from PROPOSALS, a COCO-format JSON of boxes, or with
  # PROPOSALS_MAKE=1 boxes made by make_proposals from the training set's ground truth:
  # PROPOSALS_PER_OBJECT jittered copies of each object's box, PROPOSALS_JITTER, and
  # PROPOSALS_RANDOM random boxes per image). MIN_SIZE / MAX_SIZE: the proposals' area range.
  STUDENTS=patches PROPOSALS="" PROPOSALS_MAKE=0 PROPOSALS_PER_OBJECT=3 PROPOSALS_RANDOM=4
  PROPOSALS_JITTER=0.1 MIN_SIZE=8 MAX_SIZE=1024
  BATCH=2 LR=1e-5 WD=0.1 WARMUP=1000 DET_SIZE=1024 ALPHA=0.7 SAVE_EVERY=1000 TRAIN_SEED=0
  TEACHER="" TEACHER_PRESET=tiny TEACHER_SEED=1 DATA_DIR="" EMBED_CHUNK=64 FP16=0
  # TEACHER_PRETRAIN=1: pretrain_teacher trains the teacher and the class embeddings on the
  # generated dataset's train split (PRETRAIN_*: model shape, input size, recipe)
  TEACHER_PRETRAIN=0 PRETRAIN_WIDTH=128 PRETRAIN_LAYERS=4 PRETRAIN_HEADS=4 PRETRAIN_MLP=512
  PRETRAIN_EMBED=64 PRETRAIN_PATCH=8 PRETRAIN_SIZE=64 PRETRAIN_EPOCHS=20 PRETRAIN_BATCH=32
  PRETRAIN_LR=1e-3 PRETRAIN_WD=0.1 PRETRAIN_WARMUP=50 PRETRAIN_SEED=0 PRETRAIN_SAVE_EVERY=200
  PRETRAIN_THING_WEIGHT=4 PRETRAIN_RANDOM_CROPS=2
  # TEXT_MODEL: a .safetensors checkpoint with a text tower (usually the TEACHER): embed_text
  # makes the dataset's class embeddings from it, a prompt ensemble over TEMPLATES (one
  # template per line with {}; empty: the reference's "a photo of {article} {}.")
  TEXT_MODEL="" TEMPLATES=""
  # Slurm resources (slurm/submit)
  PARTITION="" ACCOUNT="" QOS="" SBATCH_EXTRA=""
  CROPS_SHARDS=1 EMBED_SHARDS=1 EMBED_RANKS="" TRAIN_NODES=1 TRAIN_RANKS="" EVAL_RANKS=""
  TIME_PREPARE=01:00:00 TIME_TEACHER=04:00:00 TIME_CROPS=00:30:00 TIME_EMBED=04:00:00
  TIME_TRAIN=24:00:00 TIME_EVAL=02:00:00 MEM_PER_CPU="" SIGNAL_SECONDS=300
  # cluster-wide evaluation: benchmarks (dataset names) x models (this run's teacher, epochs
  # and student, plus EVAL_MODELS: "label=checkpoint" words)
  EVAL_BENCHMARKS="" EVAL_MODELS=""
  # EVAL_EPOCHS=0: evaluate only each student, not its model after every epoch
  EVAL_EPOCHS=1
  # PICTURES=N: the student's evaluation draws its first N images (image, ground truth, the
  # teacher's and the student's per-token class maps) into RUN_DIR/pictures/<benchmark>/
  PICTURES=0
  # the student as safetensors (RUN_DIR/student.safetensors) for PyTorch programs: in the
  # naming of a .safetensors TEACHER with its other tensors (the text tower) carried over,
  # else in EXPORT_NAMING (openclip | hf | eva; empty: openclip, or eva for EVA02)
  EXPORT_NAMING=""
}

job_load() {
  JOB_FILE=$1
  [ -r "$JOB_FILE" ] || { echo "clipself: cannot read the job file $JOB_FILE" >&2; return 1; }
  job_defaults
  # shellcheck disable=SC1090
  source "$JOB_FILE" || { echo "clipself: $JOB_FILE is not a valid KEY=VALUE job file" >&2; return 1; }
  local k
  for k in DATASET RUN_DIR; do
    [ -n "${!k:-}" ] || { echo "clipself: $JOB_FILE does not set $k" >&2; return 1; }
  done
  if [ -n "$TEXT_MODEL" ] && [ "$TEACHER_PRETRAIN" = 1 ]; then
    echo "clipself: $JOB_FILE sets TEXT_MODEL and TEACHER_PRETRAIN=1: the class embeddings come" \
         "from one of them, not both" >&2
    return 1
  fi
  BUILD=${BUILD:-build}
  BIN=$BUILD/bin
  EMBED_RANKS=${EMBED_RANKS:-$RANKS} TRAIN_RANKS=${TRAIN_RANKS:-$RANKS}
  EVAL_RANKS=${EVAL_RANKS:-$RANKS} EVAL_BENCHMARKS=${EVAL_BENCHMARKS:-$DATASET}
  TEACHER_PATH=${TEACHER:-$RUN_DIR/teacher.h5}
  PRETRAIN_ANNOTATIONS=${PRETRAIN_ANNOTATIONS:-$DATA_DIR/panoptic_train.json}
  CLASSES_OUT=${CLASSES_OUT:-$DATA_DIR/classes.h5}
  EVAL_DIR=$RUN_DIR/eval MANIFEST=$RUN_DIR/eval/manifest.tsv
  [ "$PROPOSALS_MAKE" = 1 ] && PROPOSALS=${PROPOSALS:-$RUN_DIR/proposals.json}
  local k
  for k in $STUDENTS; do
    case $k in
      patches) ;;
      proposals) [ -n "$PROPOSALS" ] || { echo "clipself: $JOB_FILE trains a proposals student" \
                   "but sets neither PROPOSALS (a COCO-format JSON of boxes) nor PROPOSALS_MAKE=1" >&2
                 return 1; } ;;
      *) echo "clipself: $JOB_FILE: STUDENTS has '$k'; the kinds are patches and proposals" >&2
         return 1 ;;
    esac
  done
  [ -n "$STUDENTS" ] || { echo "clipself: $JOB_FILE sets no STUDENTS" >&2; return 1; }
  student_use "${STUDENT:-${STUDENTS%% *}}" || return 1
  D=(--datasets "$DATASETS" --dataset "$DATASET")
  if [ "$(id -u)" -eq 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
  export OMP_NUM_THREADS=$THREADS_PER_RANK
}

# student_use KIND: the files of one student (patches: crops.h5, teacher_cache.h5, train/ and
# student.safetensors, as for a job with one student; proposals: the same names with
# "-proposals"), and its label in the comparison ("student" when the job trains one student,
# else "student_patches", "student_proposals").
student_use() {
  case " $STUDENTS " in *" $1 "*) ;; *)
    echo "clipself: student '$1' is not in STUDENTS ($STUDENTS)" >&2; return 1 ;;
  esac
  STUDENT=$1
  local sfx=""
  [ "$1" = patches ] || sfx=-$1
  CROPS=$RUN_DIR/crops$sfx.h5 CACHE=$RUN_DIR/teacher_cache$sfx.h5 TRAIN_DIR=$RUN_DIR/train$sfx
  EXPORT_OUT=$RUN_DIR/student$sfx.safetensors
  if [ "$STUDENTS" = "$1" ]; then STUDENT_LABEL=student; else STUDENT_LABEL=student_$1; fi
}

# mpi N: the MPI launcher for N ranks, in MPI=(...). Inside a Slurm allocation, by default
# (LAUNCHER=mpirun) Open MPI's mpirun takes the ranks and hosts from the allocation (it reads
# Slurm's variables and starts its daemons with srun) and forwards SIGUSR1/SIGTERM to the ranks;
# it needs nothing from the Slurm build, and it is what runs outside Slurm too. LAUNCHER=srun
# starts the ranks as a Slurm job step through PMIx instead (srun --mpi=pmix: per-step
# accounting and cgroups; needs Slurm's PMIx plugin built against a PMIx Open MPI can use).
# Outside an allocation: N ranks on this machine.
mpi() {
  if [ -n "${SLURM_JOB_ID:-}" ] && [ "$LAUNCHER" = srun ]; then
    MPI=(srun --mpi=pmix --cpus-per-task "$THREADS_PER_RANK")
  elif [ -n "${SLURM_JOB_ID:-}" ]; then
    MPI=(mpirun --bind-to none -x OMP_NUM_THREADS)
  else
    MPI=(mpirun -np "$1" --oversubscribe --bind-to none -x OMP_NUM_THREADS)
  fi
}

say() { echo "=== $* ($(date '+%F %T'))"; }

# ---- prepare: the dataset, when the job generates one (DATA_DIR)
stage_prepare() {
  say "prepare"
  mkdir -p "$RUN_DIR"
  if [ -n "$DATA_DIR" ] && ! verify_prepare; then
    mpi "$RANKS"
    "${MPI[@]}" "$BIN/make_dataset" --out "$DATA_DIR" --train "$TRAIN_IMAGES" --val "$VAL_IMAGES" \
      --seed "${DATA_SEED:-0}"
  fi
  if [ "$PROPOSALS_MAKE" = 1 ] && [ ! -e "$PROPOSALS" ]; then
    "$BIN/make_proposals" "${D[@]}" --out "$PROPOSALS" --per-object "$PROPOSALS_PER_OBJECT" \
      --random "$PROPOSALS_RANDOM" --jitter "$PROPOSALS_JITTER" --seed "$CROP_SEED"
  fi
}
verify_prepare() {
  if [ "$PROPOSALS_MAKE" = 1 ]; then [ -e "$PROPOSALS" ] || return 1; fi
  [ -z "$DATA_DIR" ] && return 0
  [ -e "$DATA_DIR/panoptic_val.json" ] && [ -e "$DATA_DIR/panoptic_train.json" ] &&
    [ -e "$DATA_DIR/instances_train.json" ]
}

# ---- teacher: a given checkpoint (TEACHER), one pretrained here with its class embeddings
# (TEACHER_PRETRAIN=1), or a random one with random class embeddings (TEACHER_PRESET)
pretrain_args() {
  PRETRAIN_ARGS=("${D[@]}" --annotations "$PRETRAIN_ANNOTATIONS" --out "$TEACHER_PATH"
                 --classes-out "$CLASSES_OUT" --run-dir "$RUN_DIR/pretrain"
                 --width "$PRETRAIN_WIDTH" --layers "$PRETRAIN_LAYERS" --heads "$PRETRAIN_HEADS"
                 --mlp "$PRETRAIN_MLP" --embed "$PRETRAIN_EMBED" --patch "$PRETRAIN_PATCH"
                 --size "$PRETRAIN_SIZE" --epochs "$PRETRAIN_EPOCHS" --batch "$PRETRAIN_BATCH"
                 --lr "$PRETRAIN_LR" --wd "$PRETRAIN_WD" --warmup "$PRETRAIN_WARMUP"
                 --seed "$PRETRAIN_SEED" --save-every "$PRETRAIN_SAVE_EVERY"
                 --thing-weight "$PRETRAIN_THING_WEIGHT" --random-crops "$PRETRAIN_RANDOM_CROPS")
}
stage_teacher() {
  say "teacher"
  mkdir -p "$RUN_DIR"
  if [ -n "$TEACHER" ]; then stage_classes; return; fi
  if [ "$TEACHER_PRETRAIN" = 1 ]; then
    pretrain_args; mpi "$RANKS"
    "${MPI[@]}" "$BIN/pretrain_teacher" "${PRETRAIN_ARGS[@]}" --resume
    return
  fi
  if ! "$BIN/init_model" --preset "$TEACHER_PRESET" --seed "$TEACHER_SEED" --out "$TEACHER_PATH" \
      --verify >/dev/null; then
    "$BIN/init_model" --preset "$TEACHER_PRESET" --seed "$TEACHER_SEED" --out "$TEACHER_PATH"
  fi
  if [ -n "$TEXT_MODEL" ]; then stage_classes; return; fi
  # placeholder class embeddings only for a dataset this job generates; random_classes never
  # replaces an existing file
  if [ -n "$DATA_DIR" ]; then
    local embed
    embed=$(h5dump -a embed "$TEACHER_PATH" | awk '/\(0\)/{print $2}')
    "$BIN/random_classes" "${D[@]}" --embed "$embed"
  fi
}
verify_teacher_model() {
  if [ -n "$TEACHER" ]; then [ -e "$TEACHER" ] || return 1; return 0; fi
  if [ "$TEACHER_PRETRAIN" = 1 ]; then
    pretrain_args
    "$BIN/pretrain_teacher" "${PRETRAIN_ARGS[@]}" --verify --ranks "$RANKS"
    return
  fi
  "$BIN/init_model" --preset "$TEACHER_PRESET" --seed "$TEACHER_SEED" --out "$TEACHER_PATH" --verify
}
# the teacher and, with TEXT_MODEL, its class embeddings: 2 if either is stale, else 1 if
# either is missing
verify_teacher() {
  local a=0 b=0
  verify_teacher_model || a=$?
  [ "$a" -eq 2 ] && return 2
  verify_classes || b=$?
  [ "$b" -eq 2 ] && return 2
  [ "$a" -eq 0 ] && [ "$b" -eq 0 ]
}

# ---- class embeddings from a text tower (TEXT_MODEL), part of the teacher stage
classes_args() {
  # written to the dataset's classes file (datasets.cfg), which evaluate reads
  CLASSES_ARGS=("${D[@]}" --model "$TEXT_MODEL")
  [ -n "$TEMPLATES" ] && CLASSES_ARGS+=(--templates "$TEMPLATES")
  return 0
}
stage_classes() {
  [ -n "$TEXT_MODEL" ] || return 0
  say "embed_text"
  classes_args; mpi "$RANKS"
  "${MPI[@]}" "$BIN/embed_text" "${CLASSES_ARGS[@]}"
}
verify_classes() {
  [ -n "$TEXT_MODEL" ] || return 0
  classes_args
  "$BIN/embed_text" "${CLASSES_ARGS[@]}" --verify
}

# ---- sample_crops: shard S of CROPS_SHARDS (an array task), then the join
crops_args() {
  CROPS_ARGS=("${D[@]}" --epochs "$EPOCHS" --max-split "$MAX_SPLIT" --max-boxes "$MAX_BOXES"
              --seed "$CROP_SEED" --out "$CROPS")
  if [ "$STUDENT" = proposals ]; then
    CROPS_ARGS+=(--proposals "$PROPOSALS" --min-size "$MIN_SIZE" --max-size "$MAX_SIZE")
  else
    CROPS_ARGS+=(--crop-scale "$CROP_SCALE")
  fi
}
stage_crops() {
  say "sample_crops ($STUDENT) shard ${1:-0} of $CROPS_SHARDS"
  crops_args; mpi "$RANKS"
  if [ "$CROPS_SHARDS" -gt 1 ]; then
    "${MPI[@]}" "$BIN/sample_crops" "${CROPS_ARGS[@]}" --shards "$CROPS_SHARDS" --shard "${1:-0}"
  else
    "${MPI[@]}" "$BIN/sample_crops" "${CROPS_ARGS[@]}"
  fi
}
stage_crops_join() {
  [ "$CROPS_SHARDS" -gt 1 ] || return 0
  say "sample_crops ($STUDENT) join"
  crops_args
  "$BIN/sample_crops" "${CROPS_ARGS[@]}" --shards "$CROPS_SHARDS" --join
}
verify_crops() { crops_args; "$BIN/sample_crops" "${CROPS_ARGS[@]}" --verify; }

# ---- embed_teacher: shard S of EMBED_SHARDS (an array task), then the join
embed_args() {
  EMBED_ARGS=("${D[@]}" --crops "$CROPS" --teacher "$TEACHER_PATH" --out "$CACHE"
              --chunk "$EMBED_CHUNK")
  [ "$FP16" = 1 ] && EMBED_ARGS+=(--fp16)
  return 0
}
stage_embed() {
  say "embed_teacher ($STUDENT) shard ${1:-0} of $EMBED_SHARDS"
  embed_args; mpi "$EMBED_RANKS"
  if [ "$EMBED_SHARDS" -gt 1 ]; then
    "${MPI[@]}" "$BIN/embed_teacher" "${EMBED_ARGS[@]}" --shards "$EMBED_SHARDS" \
      --shard "${1:-0}" --no-join
  else
    "${MPI[@]}" "$BIN/embed_teacher" "${EMBED_ARGS[@]}"
  fi
}
stage_embed_join() {
  [ "$EMBED_SHARDS" -gt 1 ] || return 0
  say "embed_teacher ($STUDENT) join"
  embed_args; mpi "$EMBED_RANKS"
  "${MPI[@]}" "$BIN/embed_teacher" "${EMBED_ARGS[@]}" --join
}
verify_embed() { embed_args; "$BIN/embed_teacher" "${EMBED_ARGS[@]}" --verify; }

# ---- train_student: TRAIN_CMD, run by the caller (the batch script runs it in the background
# to forward signals)
train_args() {
  TRAIN_ARGS=("${D[@]}" --crops "$CROPS" --cache "$CACHE" --init "$TEACHER_PATH"
              --run-dir "$TRAIN_DIR" --epochs "$EPOCHS" --batch "$BATCH" --lr "$LR" --wd "$WD"
              --warmup "$WARMUP" --det-size "$DET_SIZE" --alpha "$ALPHA"
              --save-every "$SAVE_EVERY" --seed "$TRAIN_SEED")
}
train_cmd() {
  train_args; mpi "$TRAIN_RANKS"
  TRAIN_CMD=("${MPI[@]}" "$BIN/train_student" "${TRAIN_ARGS[@]}" --resume)
}
verify_train() {
  train_args
  "$BIN/train_student" "${TRAIN_ARGS[@]}" --verify --ranks "$TRAIN_RANKS" || return
  verify_export
}

# ---- export: the trained student as safetensors, run at the end of training
export_args() {
  EXPORT_ARGS=(--model "$TRAIN_DIR/student.h5" --out "$EXPORT_OUT")
  case $TEACHER_PATH in *.safetensors) EXPORT_ARGS+=(--like "$TEACHER_PATH") ;; esac
  [ -n "$EXPORT_NAMING" ] && EXPORT_ARGS+=(--naming "$EXPORT_NAMING")
  return 0
}
stage_export() {
  say "export_model ($STUDENT)"
  export_args
  "$BIN/export_model" "${EXPORT_ARGS[@]}"
}
verify_export() { export_args; "$BIN/export_model" "${EXPORT_ARGS[@]}" --verify; }

# ---- evaluate: one task per (model, benchmark) line of the manifest, then the comparison
# manifest lines: label TAB checkpoint TAB benchmark TAB results JSON
write_manifest() {
  mkdir -p "$EVAL_DIR"
  local tmp=$MANIFEST.tmp.$$ e b w k keep=$STUDENT
  {
    echo "# label	checkpoint	benchmark	results (written by slurm/lib.sh for $JOB_FILE)"
    for b in $EVAL_BENCHMARKS; do
      printf 'teacher\t%s\t%s\t%s\n' "$TEACHER_PATH" "$b" "$EVAL_DIR/teacher@$b.json"
      for k in $STUDENTS; do
        student_use "$k"
        local ep=epoch
        [ "$STUDENT_LABEL" = student ] || ep=${STUDENT_LABEL#student_}_epoch
        for ((e = 1; e < EPOCHS && EVAL_EPOCHS; e++)); do
          printf '%s_%d\t%s\t%s\t%s\n' "$ep" "$e" "$TRAIN_DIR/epoch_$e.h5" "$b" "$EVAL_DIR/${ep}_$e@$b.json"
        done
        printf '%s\t%s\t%s\t%s\n' "$STUDENT_LABEL" "$TRAIN_DIR/student.h5" "$b" "$EVAL_DIR/$STUDENT_LABEL@$b.json"
      done
      for w in $EVAL_MODELS; do
        printf '%s\t%s\t%s\t%s\n' "${w%%=*}" "${w#*=}" "$b" "$EVAL_DIR/${w%%=*}@$b.json"
      done
    done
  } >"$tmp" && mv -f "$tmp" "$MANIFEST"
  student_use "$keep"
}
# manifest_task I: MT_LABEL MT_MODEL MT_BENCH MT_OUT of task I (0-based)
manifest_task() {
  local line
  line=$(grep -v '^#' "$MANIFEST" | sed -n "$(( $1 + 1 ))p")
  [ -n "$line" ] || { echo "clipself: $MANIFEST has no task $1" >&2; return 1; }
  IFS=$'\t' read -r MT_LABEL MT_MODEL MT_BENCH MT_OUT <<<"$line"
}
manifest_count() { grep -vc '^#' "$MANIFEST"; }
eval_args() {
  EVAL_ARGS=(--datasets "$DATASETS" --dataset "$MT_BENCH" --model "$MT_MODEL" --label "$MT_LABEL"
             --det-size "$DET_SIZE" --out "$MT_OUT")
}
stage_eval() {
  manifest_task "$1" || return 1
  say "evaluate $MT_LABEL on $MT_BENCH"
  eval_args; mpi "$EVAL_RANKS"
  local pics=()
  if [ "$PICTURES" -gt 0 ] && [[ "$MT_LABEL" = student || "$MT_LABEL" = student_* ]]; then
    pics=(--pictures "$RUN_DIR/pictures/$MT_BENCH${MT_LABEL#student}" --pictures-max "$PICTURES"
          --pictures-vs "$TEACHER_PATH")
  fi
  "${MPI[@]}" "$BIN/evaluate" "${EVAL_ARGS[@]}" "${pics[@]}"
}
verify_eval() {
  manifest_task "$1" || return 1
  [ -e "$MT_MODEL" ] || return 1
  eval_args
  "$BIN/evaluate" "${EVAL_ARGS[@]}" --verify
}
stage_compare() {
  say "compare"
  local after="" k keep=$STUDENT
  for k in $STUDENTS; do student_use "$k"; after=${after:+$after,}$STUDENT_LABEL; done
  student_use "$keep"
  "$BIN/compare_results" --manifest "$MANIFEST" --out "$RUN_DIR/comparison" --before teacher \
    --after "$after"
}
