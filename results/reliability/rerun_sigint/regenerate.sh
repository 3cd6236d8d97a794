#!/usr/bin/env bash
# The SIGINT row of the fault matrix alone, rerun after the full matrix (../README.md) passed it 1 of 2 while sharing the
# 2 cores with CI (its second signal came after training had ended). From the repository root:
set -euo pipefail
python -m tests.reliability.faults --rows=sigint --sigint_trials=2 --seed=0 --out=results/reliability/rerun_sigint
