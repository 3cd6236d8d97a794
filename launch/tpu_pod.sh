#!/usr/bin/env bash
# Trains lungjax on every worker of a Cloud TPU VM slice (one host or a pod) in one command.
#
#   TPU=my-v4-32 ZONE=us-central2-b REPO_URL=https://github.com/<you>/lungjax.git \
#   WORKDIR=/mnt/shared/workdirs/cnn DATA=gs://my-bucket/Covid19-dataset bash launch/tpu_pod.sh
#
# On each worker (gcloud compute tpus tpu-vm ssh --worker=all) it clones or updates REPO_URL at BRANCH into
# ~/lungjax, installs it with jax[tpu], fetches the data, and runs
#   python -m lungjax.main --config=$CONFIG --workdir=$WORKDIR --config.distributed.enabled=True ...
# JAX detects the slice (coordinator, process count and index) from the TPU VM's metadata, so every worker runs
# the same command; batches are sharded over all chips of all workers (the batch size must divide by them).
#
# Required: TPU, ZONE, REPO_URL (a git URL every worker can clone), WORKDIR (a folder on a filesystem every worker
#   mounts at the same path, e.g. Filestore NFS or a gcsfuse bucket: orbax writes one checkpoint from all workers).
# Optional: PROJECT (gcloud project), BRANCH (main), CONFIG (configs/cnn.py), PYTHON (python3; lungjax needs 3.11+,
#   so on a TPU VM image whose python3 is 3.10 install python3.11 and set PYTHON=python3.11),
#   DATA: a folder holding train/ (and test/) on every worker, or gs://... copied to ~/lungjax-data on each
#     worker, or empty to let each worker download the Kaggle dataset with kagglehub;
#   FLAGS: more lungjax flags, e.g. '--config.train.batch_size=32 --config.train.num_epochs=20';
#   DRY_RUN=1 prints the gcloud command instead of running it.
set -euo pipefail

: "${TPU:?set TPU to the TPU VM name}"
: "${ZONE:?set ZONE to the TPU VM zone}"
: "${REPO_URL:?set REPO_URL to a git URL of lungjax that every worker can clone}"
: "${WORKDIR:?set WORKDIR to a folder every worker mounts at the same path (NFS / gcsfuse)}"
BRANCH=${BRANCH:-main}
CONFIG=${CONFIG:-configs/cnn.py}
DATA=${DATA:-}
FLAGS=${FLAGS:-}
PYTHON=${PYTHON:-python3}

q() { printf '%q' "$1"; }  # Quotes a value for the remote shell.

fetch_data=true
data_flag=""
if [[ "$DATA" == gs://* ]]; then
  fetch_data="mkdir -p \$HOME/lungjax-data && gcloud storage rsync --recursive $(q "$DATA") \$HOME/lungjax-data"
  data_flag="--config.data.root=\$HOME/lungjax-data"
elif [[ -n "$DATA" ]]; then
  data_flag="--config.data.root=$(q "$DATA")"
fi

remote="set -euo pipefail
if [ -d \$HOME/lungjax/.git ]; then git -C \$HOME/lungjax fetch --depth=1 origin $(q "$BRANCH") && git -C \$HOME/lungjax checkout --force FETCH_HEAD;
else git clone --depth=1 --branch=$(q "$BRANCH") $(q "$REPO_URL") \$HOME/lungjax; fi
cd \$HOME/lungjax
$(q "$PYTHON") -m pip install --quiet -e . 'jax[tpu]>=0.10.2'
$fetch_data
parent=\$(dirname $(q "$WORKDIR"))
[ -d \"\$parent\" ] || { echo \"\$(hostname): \$parent is missing: WORKDIR must be on a filesystem every worker mounts\" >&2; exit 1; }
mkdir -p $(q "$WORKDIR")
$(q "$PYTHON") -m lungjax.main --config=$(q "$CONFIG") --workdir=$(q "$WORKDIR") --config.distributed.enabled=True $data_flag $FLAGS"

cmd=(gcloud compute tpus tpu-vm ssh "$TPU" "--zone=$ZONE" --worker=all "--command=$remote")
if [[ -n "${PROJECT:-}" ]]; then cmd+=("--project=$PROJECT"); fi

if [[ "${DRY_RUN:-0}" == 1 ]]; then
  printf '%q ' "${cmd[@]}"
  echo
  exit 0
fi
if ! command -v gcloud > /dev/null; then
  echo "tpu_pod.sh: gcloud not found: install the Google Cloud CLI (https://cloud.google.com/sdk) and log in" >&2
  exit 1
fi
exec "${cmd[@]}"
