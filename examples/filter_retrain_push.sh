#!/usr/bin/env bash
# The paper's last stage: score a large pool with a trained PRM, keep what it is unsure of, have
# the judge label it, retrain on it, and publish the model and the labels.
set -euo pipefail
pool=${1:-my-org/trajectory-pool}
accelerate launch -m actprm.cli filter --model outputs/actprm-7b-online --data "$pool" \
  --output_dir outputs/pool-uncertain --pred_threshold 0.95 --std_threshold 0.005
accelerate launch -m actprm.cli train --config examples/paper_replication/online_mode.yaml \
  --model_name_or_path outputs/actprm-7b-online --dataset outputs/pool-uncertain --selection all \
  --output_dir outputs/actprm-7b-retrained
actprm push --model-dir outputs/actprm-7b-retrained --repo-id my-org/actprm-7b-retrained
actprm push --dataset outputs/actprm-7b-retrained --repo-id my-org/actprm-7b-retrained-labels
