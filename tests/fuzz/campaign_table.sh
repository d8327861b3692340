#!/bin/bash
# Prints the markdown table of bench/results/fuzz/<date>.md from the campaigns of a build directory
# (BUILD_DIR/fuzz-campaign/<name>/runs.tsv, written by campaign.sh): per target the executions,
# runs and seconds summed over its runs, the exec/s, cov:/ft: of its last run (libFuzzer's final
# status line), the corpus size and the crash inputs left in artifacts/.
#
#   tests/fuzz/campaign_table.sh BUILD_DIR
set -u
dir="$1/fuzz-campaign"
echo "| target | executions | runs | seconds | exec/s | cov | ft | corpus | crashes |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for tsv in "$dir"/*/runs.tsv; do
  name=$(basename "$(dirname "$tsv")")
  crashes=$(find "$(dirname "$tsv")/artifacts" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l)
  awk -F'\t' -v name="$name" -v crashes="$crashes" 'NR > 1 { e += $2; s += $3; n++; cov = $5; ft = $6; corp = $7 }
    END { printf "| %s_fuzz | %d | %d | %d | %d | %s | %s | %s | %d |\n", name, e, n, s, (s ? e / s : 0), cov, ft, corp, crashes }' "$tsv"
done
