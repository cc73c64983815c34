#!/usr/bin/env bash
# Evaluate released PRMs on ProcessBench and PRMBench (GPU recommended).
set -euo pipefail
for model in sail/ActPRM sail/ActPRM-X; do
  actprm eval --model "$model" --benchmark processbench --calibrate gsm8k --dtype bfloat16 --output_dir "outputs/eval/${model#*/}-processbench"
  actprm eval --model "$model" --benchmark prmbench --dtype bfloat16 --output_dir "outputs/eval/${model#*/}-prmbench"
done
# Qwen2.5-Math-PRM ships its own modelling code: it runs only with --trust_remote_code.
actprm eval --model Qwen/Qwen2.5-Math-PRM-7B --trust_remote_code --benchmark processbench --threshold 0.5 \
  --dtype bfloat16 --output_dir outputs/eval/Qwen2.5-Math-PRM-7B-processbench
actprm eval --model Qwen/Qwen2.5-Math-PRM-7B --trust_remote_code --benchmark prmbench \
  --dtype bfloat16 --output_dir outputs/eval/Qwen2.5-Math-PRM-7B-prmbench

# Baselines of ProcessBench's table that StepScorer reads. Step-tag language-model PRMs are plain causal
# LMs: name their layout with --step_tag_format (math_shepherd: the `ки` tag and +/- tokens; rlhflow: +/-
# answered in the chat turns). Skywork's value-head PRMs are recognised from their config.
actprm eval --model peiyi9979/math-shepherd-mistral-7b-prm --step_tag_format math_shepherd \
  --benchmark processbench --threshold 0.5 --dtype bfloat16 --output_dir outputs/eval/math-shepherd-processbench
for model in RLHFlow/Llama3.1-8B-PRM-Mistral-Data RLHFlow/Llama3.1-8B-PRM-Deepseek-Data; do
  actprm eval --model "$model" --step_tag_format rlhflow --benchmark processbench --threshold 0.5 \
    --dtype bfloat16 --output_dir "outputs/eval/${model#*/}-processbench"
done
for model in Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B Skywork/Skywork-o1-Open-PRM-Qwen-2.5-7B; do
  actprm eval --model "$model" --benchmark processbench --threshold 0.5 --dtype bfloat16 \
    --output_dir "outputs/eval/${model#*/}-processbench"
done

# How good is a judge before it labels: the critic's ProcessBench F1 with actprm's critique prompt
# (majority vote over 8 samples as in ProcessBench's critic table), e.g. against a vLLM server:
#   vllm serve Qwen/QwQ-32B --port 8000
actprm eval --judge openai --judge_base_url http://localhost:8000/v1 --judge_model Qwen/QwQ-32B \
  --judge_num_samples 8 --judge_temperature 0.7 --judge_max_tokens 32768 --benchmark processbench \
  --output_dir outputs/eval/QwQ-32B-judge-processbench
