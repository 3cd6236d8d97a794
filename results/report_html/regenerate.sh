#!/usr/bin/env bash
# Regenerates results/report_html/top.png: report.html of the grouped multisource run (results/groups/regenerate.sh
# trains it) on its own validation split, with Cohen's metadata as subgroups, rendered by headless Chromium. Only the
# top of the page (tables, no films: dataset images are never committed) is kept.
set -euo pipefail
cd "$(dirname "$0")/../.."
data=$(realpath "${1:-../shared/data}")
run=workdirs/results-groups/grouped/seed_0
table="$data/cohen-covid-chestxray/metadata.csv"
python -m lungjax.main --config=configs/multisource.py --config.data.root="$data/covid19-image-dataset" \
  --config.data.extra_sources="('radiography=$data/covid19-radiography-sample;COVID=Covid,Normal=Normal','cohen=$data/cohen-covid-chestxray/images;COVID-19=Covid,No Finding=Normal;metadata=$table;group_by=patientid')" \
  --workdir="$run" --mode=eval --config.eval.dir=@validation --config.eval.metadata="$table" \
  --config.eval.subgroups='sex,view,age:0-40,40-65,65-'
chromium --headless --disable-gpu --no-sandbox --hide-scrollbars --window-size=1200,2400 \
  --screenshot="$PWD/results/report_html/top.png" "file://$(realpath "$run")/eval/validation/report.html"
