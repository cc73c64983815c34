"""Forward-time overhead of the E=32 ensemble head over a single linear head on a Qwen2.5-0.5B-shaped backbone.

Both heads read the same backbone on the same inputs in the same run; the two forwards alternate and
the medians are compared. Goal: under 3% extra.

    python benchmarks/ensemble_overhead.py                 # CPU, float32
    python benchmarks/ensemble_overhead.py --device cuda   # GPU, bfloat16
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from transformers import Qwen2Config

from actprm.modeling import EnsemblePRMConfig, EnsemblePRMModel

QWEN25_05B_SHAPE = {
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32768,
    "tie_word_embeddings": True,
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default=None, help="float32 or bfloat16 (default: float32 on cpu, bfloat16 on cuda)")
    parser.add_argument("--num-ensemble", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--vocab-size", type=int, default=151936)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=7)
    return parser.parse_args()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], torch.Tensor], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    torch.manual_seed(0)
    config = EnsemblePRMConfig(
        backbone_config=Qwen2Config(vocab_size=args.vocab_size, **QWEN25_05B_SHAPE),
        num_ensemble=args.num_ensemble,
    )
    model = EnsemblePRMModel(config).to(device=device, dtype=dtype).eval()
    linear_head = torch.nn.Linear(config.backbone_config.hidden_size, 1, device=device, dtype=dtype)
    input_ids = torch.randint(0, args.vocab_size, (args.batch_size, args.seq_len), device=device)
    attention_mask = torch.ones_like(input_ids)

    def backbone_hidden() -> torch.Tensor:
        return model.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state

    def linear_forward() -> torch.Tensor:
        return linear_head(backbone_hidden()).squeeze(-1).float()

    def ensemble_forward() -> torch.Tensor:
        return model(input_ids, attention_mask=attention_mask).logits

    with torch.inference_mode():
        hidden = backbone_hidden()
        contenders = {
            "linear head": linear_forward,
            f"{args.num_ensemble}-head ensemble": ensemble_forward,
            "linear head alone": lambda: linear_head(hidden),
            "ensemble head alone": lambda: model.score(hidden),
        }
        for _ in range(args.warmup):
            for fn in contenders.values():
                fn()
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(args.runs):
            for name, fn in contenders.items():
                times[name].append(timed(fn, device))

    medians = {name: statistics.median(values) for name, values in times.items()}
    names = list(contenders)
    print(
        f"device={device} dtype={dtype} batch={args.batch_size}x{args.seq_len} vocab={args.vocab_size} "
        f"E={args.num_ensemble} h={config.head_hidden_size} runs={args.runs}"
    )
    for name in names:
        print(f"  {name:>24}: median {medians[name] * 1e3:9.2f} ms")
    overhead = medians[names[1]] / medians[names[0]] - 1
    head_share = (medians[names[3]] - medians[names[2]]) / medians[names[0]]
    print(f"full forward overhead: {overhead:+.2%}   head-only difference / full forward: {head_share:+.2%}")
    print("goal: under +3.00%", "(met)" if overhead < 0.03 else "(NOT met)")


if __name__ == "__main__":
    main()
