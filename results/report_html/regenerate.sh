#!/usr/bin/env bash
# top.png is now drawn by results/subgroups/regenerate.sh: report.html of a multisource model trained WITHOUT Cohen's
# films, evaluated on all 313 of them with Cohen's metadata as subgroups (sex, view, age binned).
set -euo pipefail
exec bash "$(dirname "$0")/../subgroups/regenerate.sh" "$@"
