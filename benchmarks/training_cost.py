"""Training cost: wall time per trajectory, ActivePRMTrainer against loss masking, at about 40% selected.

The loss-masking reference is how the paper's code trains: a forward and backward pass over every
trajectory of the batch, with the loss kept only on the uncertain ones. ActivePRMTrainer scores
candidates without gradients and runs the training pass on selected trajectories only. Both use
the same rule, model, data, batch size and optimiser; `std_threshold` is set so the rule selects
about 40% of the pool at the start. Goal: ratio (ours / reference) at most 0.75.

    python benchmarks/training_cost.py [--hidden 256 --layers 4 --pool 512 --device cpu]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch
from transformers import AutoTokenizer, Qwen2Config

from actprm.data.synthetic import make_arithmetic_dataset
from actprm.default_backbone import default_backbone
from actprm.modeling import EnsemblePRMConfig, EnsemblePRMModel
from actprm.selection import considered_steps, pad_step_statistics, select_confident
from actprm.tokenization import DEFAULT_SEPARATOR, IGNORE_INDEX
from actprm.trainer import ActivePRMTrainer
from actprm.training_args import ActivePRMConfig

PRED_THRESHOLD = 0.5 + 1e-6  # every mean counts as decided: only the heads' spread selects


class LossMaskingTrainer(ActivePRMTrainer):
    """The reference: full forward and backward on every candidate, loss only on the uncertain ones."""

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.active.seen += len(inputs["row"])
        return super(ActivePRMTrainer, self).training_step(model, inputs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = {k: v for k, v in inputs.items() if k != "row"}
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        probabilities = torch.sigmoid(outputs.logits.detach())
        separators = inputs["input_ids"] == self.step_tokenizer.separator_id
        per_row = [(p[:, s].mean(0), p[:, s].std(0)) for p, s in zip(probabilities.transpose(0, 1), separators)]
        decision = select_confident(
            *pad_step_statistics(per_row), pred_threshold=PRED_THRESHOLD, std_threshold=self.args.std_threshold
        )
        labels = labels.masked_fill(decision.confident.unsqueeze(1), IGNORE_INDEX)
        self.active.trained += int((~decision.confident).sum())
        loss, _, _ = self.accelerator.unwrap_model(model).ensemble_loss(outputs.logits, labels)
        return loss


def build_model(hidden: int, layers: int, tokenizer, num_ensemble: int) -> EnsemblePRMModel:
    backbone = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 3, num_hidden_layers=layers,
        num_attention_heads=max(4, hidden // 64), num_key_value_heads=2, max_position_embeddings=2048,
    )
    config = EnsemblePRMConfig(
        backbone_config=backbone, num_ensemble=num_ensemble, separator=DEFAULT_SEPARATOR,
        separator_token_id=tokenizer.convert_tokens_to_ids(DEFAULT_SEPARATOR),
    )
    torch.manual_seed(0)
    return EnsemblePRMModel(config)


def threshold_for_fraction(model, trainer: ActivePRMTrainer, fraction: float) -> float:
    """The std threshold at which the initial model finds ``fraction`` of the pool uncertain."""
    loader = trainer.get_train_dataloader()
    spreads = []
    model.eval()
    for batch in loader:
        inputs = trainer._prepare_inputs({k: batch[k] for k in ("input_ids", "attention_mask")})
        mean, std, mask = pad_step_statistics(model.step_scores(**inputs))
        considered, _ = considered_steps(mean, mask)
        spreads += std.masked_fill(~considered, 0).max(1).values.tolist()
    model.train()
    return float(torch.tensor(spreads).quantile(1 - fraction))


def timed_run(trainer_class, model_state, args_kwargs, pool, tokenizer, hidden, layers, num_ensemble):
    model = build_model(hidden, layers, tokenizer, num_ensemble)
    model.load_state_dict(model_state)
    with tempfile.TemporaryDirectory() as output_dir:
        args = ActivePRMConfig(output_dir=output_dir, **args_kwargs)
        trainer = trainer_class(model, args=args, train_dataset=pool, processing_class=tokenizer)
        start = time.perf_counter()
        trainer.train()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    summary = trainer.active_learning_summary()
    return elapsed / summary["seen"], summary["trained"] / summary["seen"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--num_ensemble", type=int, default=8)
    parser.add_argument("--pool", type=int, default=512)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--fraction", type=float, default=0.4, help="target fraction selected")
    parser.add_argument("--repeats", type=int, default=2, help="alternating timed runs of each")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    options = parser.parse_args()

    tokenizer = AutoTokenizer.from_pretrained(default_backbone())
    pool = make_arithmetic_dataset(options.pool, seed=0)
    model = build_model(options.hidden, options.layers, tokenizer, options.num_ensemble)
    args_kwargs = dict(
        per_device_train_batch_size=options.batch_size, num_train_epochs=1, learning_rate=1e-5,
        lr_scheduler_type="constant", pred_threshold=PRED_THRESHOLD, report_to="none", save_strategy="no",
        disable_tqdm=True, logging_strategy="no", seed=0, use_cpu=options.device == "cpu",
        bf16=options.device == "cuda",
    )
    with tempfile.TemporaryDirectory() as output_dir:
        probe = ActivePRMTrainer(model, args=ActivePRMConfig(output_dir=output_dir, **args_kwargs), train_dataset=pool,
                                 processing_class=tokenizer)
        args_kwargs["std_threshold"] = threshold_for_fraction(probe.model, probe, options.fraction)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}

    timings = {"active": [], "loss_masking": []}
    fractions = {}
    for _ in range(options.repeats):
        for name, trainer_class in (("active", ActivePRMTrainer), ("loss_masking", LossMaskingTrainer)):
            per_trajectory, fraction = timed_run(trainer_class, state, args_kwargs, pool, tokenizer,
                                                 options.hidden, options.layers, options.num_ensemble)
            timings[name].append(per_trajectory)
            fractions[name] = fraction
    best = {name: min(values) for name, values in timings.items()}
    ratio = best["active"] / best["loss_masking"]
    print(json.dumps({"device": options.device, "hidden": options.hidden, "layers": options.layers,
                      "selected_fraction": fractions, "seconds_per_trajectory": best, "ratio": round(ratio, 3)}))
    print(f"ActivePRMTrainer / loss masking = {ratio:.3f} at {fractions['active']:.0%} selected "
          f"(goal <= 0.75: {'met' if ratio <= 0.75 else 'NOT met'})")


if __name__ == "__main__":
    main()
