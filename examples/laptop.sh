#!/usr/bin/env bash
# The embedded default on a laptop (CPU, offline): the README's main job, then the
# annotation-efficiency curves and their plot.
set -euo pipefail
actprm quickstart --output_dir outputs/quickstart
python benchmarks/annotation_efficiency.py --output_dir outputs/annotation-efficiency
echo "plot: outputs/annotation-efficiency/annotation_efficiency.png"
