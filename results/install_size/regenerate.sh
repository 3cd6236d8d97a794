#!/bin/bash
# The installed size of the core dependencies with and without the [prepare] extra (TFDS, array_record, pyarrow),
# from the RECORD files of the distributions installed in this environment. Run from the repository root.
set -euo pipefail
python -m benchmarks.install_size --extra=prepare --out=results/install_size/install_size.json
