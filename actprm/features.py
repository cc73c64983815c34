"""Step-end hidden states of a frozen backbone, computed once and cached on disk.

Training only the heads on a frozen backbone needs the backbone's hidden state at each step
separator, and nothing else. `compute_step_features` runs the backbone once (no gradients, batches
sorted by length) and writes those states to a `StepFeatureCache`; heads then train on them in
seconds (`ActivePRMConfig.step_features_dir`).

Cache format: a folder of ``features-NNNNN.safetensors`` shards, written one after the other (a run
stopped half-way keeps the shards it wrote). Each shard holds

- ``offsets``: int64 ``[n + 1]``; trajectory ``i`` of the shard owns rows ``offsets[i]:offsets[i + 1]``;
- ``layer_L``: float ``[offsets[-1], hidden_size]`` for each cached layer ``L``: row ``j`` of a
  trajectory is the hidden state at its ``j``-th separator. ``L`` indexes the backbone's
  ``hidden_states`` (0: the embeddings, ``num_hidden_layers``: the last layer, after the final norm);

and, as safetensors metadata, ``keys`` (a JSON list: the `trajectory_key` of each trajectory, the
SHA-1 of its token ids) and ``backbone`` (`backbone_fingerprint` of the model the states came from).
A trajectory is found by its token ids, so one cache serves any dataset, order or subset
tokenised the same way. A cache belongs to one backbone: reading it with another is an error.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.nn.utils.rnn import pad_sequence

from .tokenization import IGNORE_INDEX

__all__ = [
    "StepFeatureCache",
    "StepFeatureCollator",
    "backbone_fingerprint",
    "compute_step_features",
    "resolve_layer",
    "step_feature_rows",
    "trajectory_key",
]

SHARD_PATTERN = "features-{:05d}.safetensors"


def trajectory_key(input_ids: Sequence[int]) -> str:
    """SHA-1 of a tokenised trajectory's ids: the key its step features are cached under."""
    return hashlib.sha1(torch.tensor(list(input_ids), dtype=torch.int64).numpy().tobytes()).hexdigest()


def resolve_layer(layer: int, num_hidden_layers: int) -> int:
    """``layer`` as a non-negative index into ``hidden_states`` (``-1`` is ``num_hidden_layers``)."""
    if not -num_hidden_layers - 1 <= layer <= num_hidden_layers:
        raise ValueError(f"hidden layer {layer} is outside [-{num_hidden_layers + 1}, {num_hidden_layers}]")
    return layer % (num_hidden_layers + 1)


def backbone_fingerprint(model: Any) -> str:
    """Identity of an `EnsemblePRMModel`'s backbone: its architecture and a hash of its weights' first and
    last values, and of the separator's embedding (new and random when the separator was added)."""
    backbone, config = model.model, model.config
    parameters = list(backbone.parameters())
    digest = hashlib.sha1()
    for tensor in (parameters[0].flatten()[:4096], parameters[-1].flatten()[-4096:],
                   backbone.get_input_embeddings().weight[config.separator_token_id]):
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    text = backbone.config.get_text_config()
    return f"{text.model_type}-{text.num_hidden_layers}x{text.hidden_size}-{digest.hexdigest()[:16]}"


class StepFeatureCache:
    """A folder of cached step-end hidden states (see the module doc for the format).

    Args:
        path: the folder; created when missing.
        backbone: `backbone_fingerprint` of the model the caller uses; shards from another backbone
            raise a `ValueError` naming the file.

    Example:
        ```py
        >>> from actprm import StepFeatureCache
        >>> cache = StepFeatureCache("features")
        >>> cache.has("0123abcd", layer=-1)
        False
        ```
    """

    def __init__(self, path: str | os.PathLike, backbone: str | None = None) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.backbone = backbone
        self._where: dict[str, tuple[Path, int]] = {}
        self._layers: dict[Path, set[int]] = {}
        self._loaded: dict[tuple[Path, int], tuple[torch.Tensor, torch.Tensor]] = {}
        for shard in sorted(self.path.glob("features-*.safetensors")):
            self._index(shard)

    def _index(self, shard: Path) -> None:
        try:
            with safe_open(shard, framework="pt") as handle:
                metadata, names = handle.metadata() or {}, handle.keys()
        except Exception as error:  # safetensors raises its own error types for corrupt files
            raise ValueError(f"{shard}: not a readable step-feature shard ({error})") from error
        if "keys" not in metadata or "offsets" not in names:
            raise ValueError(f"{shard}: not a step-feature shard (no 'keys' metadata or 'offsets' tensor)")
        if self.backbone is not None and metadata.get("backbone") != self.backbone:
            raise ValueError(
                f"{shard}: step features of backbone {metadata.get('backbone')!r}, not of this model's "
                f"{self.backbone!r}; use another folder for this backbone"
            )
        self._layers[shard] = {int(name.removeprefix("layer_")) for name in names if name.startswith("layer_")}
        for position, key in enumerate(json.loads(metadata["keys"])):
            self._where[key] = (shard, position)

    def __len__(self) -> int:
        return len(self._where)

    def has(self, key: str, layer: int) -> bool:
        """Whether the trajectory ``key`` has cached states of ``layer`` (a non-negative index)."""
        return key in self._where and layer in self._layers[self._where[key][0]]

    def get(self, key: str, layer: int) -> torch.Tensor:
        """``[num_steps, hidden_size]`` hidden states of ``layer`` at the separators of trajectory ``key``."""
        if not self.has(key, layer):
            raise KeyError(f"{self.path}: no layer-{layer} step features for trajectory {key}")
        shard, position = self._where[key]
        if (shard, layer) not in self._loaded:
            with safe_open(shard, framework="pt") as handle:
                self._loaded[shard, layer] = handle.get_tensor("offsets"), handle.get_tensor(f"layer_{layer}")
        offsets, states = self._loaded[shard, layer]
        return states[offsets[position] : offsets[position + 1]]

    def add(self, keys: list[str], states: dict[int, list[torch.Tensor]]) -> Path:
        """Write one shard: ``states[layer][i]`` (``[num_steps, hidden]``) belongs to ``keys[i]``."""
        lengths = torch.tensor([0] + [len(s) for s in next(iter(states.values()))])
        tensors = {f"layer_{layer}": torch.cat(per_key).contiguous() for layer, per_key in states.items()}
        tensors["offsets"] = lengths.cumsum(0)
        shard = self.path / SHARD_PATTERN.format(len(self._layers))
        while shard.exists():
            shard = self.path / SHARD_PATTERN.format(int(shard.stem.split("-")[1]) + 1)
        temporary = shard.with_suffix(".tmp")
        save_file(tensors, temporary, metadata={"keys": json.dumps(keys), "backbone": self.backbone or ""})
        temporary.rename(shard)
        self._index(shard)
        return shard


@torch.no_grad()
def compute_step_features(
    model: Any,
    input_ids: Iterable[Sequence[int]],
    cache: StepFeatureCache,
    layers: Sequence[int],
    *,
    batch_size: int = 8,
    shard_size: int = 256,
    autocast_dtype: torch.dtype | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Cache the hidden states of ``layers`` at every separator of each trajectory not cached yet.

    Args:
        model: an `EnsemblePRMModel` (its backbone runs, in eval mode, without gradients).
        input_ids: tokenised trajectories (a separator token after every step).
        cache: where the states go, one shard per ``shard_size`` trajectories.
        layers: indices into the backbone's ``hidden_states`` (``-1``: the last).
        batch_size: trajectories per forward; batches are sorted by length within windows of eight
            batches, so that the trajectories done when a run stops are the first ones of ``input_ids``.
        autocast_dtype: run the forward under `torch.autocast` in this dtype (e.g. ``torch.bfloat16``:
            2.4x faster on CPUs with AMX, hidden states within 0.3% of float32's); the states are stored
            in float32 either way.
        progress: called with (done, total) after each batch.

    Returns:
        How many trajectories were computed (those already cached are skipped).

    Example:
        ```py
        >>> from actprm import EnsemblePRMModel, StepFeatureCache, compute_step_features, default_backbone
        >>> model = EnsemblePRMModel.from_backbone(default_backbone())
        >>> separator = model.config.separator_token_id
        >>> cache = StepFeatureCache("features")
        >>> compute_step_features(model, [[5, 6, separator, 7, separator]], cache, layers=[-1])
        1
        ```
    """
    backbone, separator = model.model, model.config.separator_token_id
    num_layers = backbone.config.get_text_config().num_hidden_layers
    layers = sorted({resolve_layer(layer, num_layers) for layer in layers})
    todo = {}
    for ids in input_ids:
        key = trajectory_key(ids)
        if not all(cache.has(key, layer) for layer in layers):
            todo[key] = list(ids)
    window = batch_size * 8  # sorted by length within windows: a run stopped early has done a prefix of the input
    pending = list(todo)
    order = [key for start in range(0, len(pending), window)
             for key in sorted(pending[start : start + window], key=lambda key: len(todo[key]))]
    was_training = backbone.training
    backbone.eval()
    device = next(backbone.parameters()).device
    keys, states = [], {layer: [] for layer in layers}
    for start in range(0, len(order), batch_size):
        batch_keys = order[start : start + batch_size]
        batch = pad_sequence([torch.tensor(todo[k]) for k in batch_keys], batch_first=True, padding_value=0).to(device)
        mask = pad_sequence([torch.ones(len(todo[k]), dtype=torch.long) for k in batch_keys], batch_first=True).to(device)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            outputs = backbone(input_ids=batch, attention_mask=mask, output_hidden_states=True, use_cache=False)
        hidden = outputs.hidden_states
        at_separator = (batch == separator) & mask.bool()
        for row, key in enumerate(batch_keys):
            keys.append(key)
            for layer in layers:
                states[layer].append(hidden[layer][row, at_separator[row]].float().cpu())
        if len(keys) >= shard_size or start + batch_size >= len(order):
            cache.add(keys, states)
            keys, states = [], {layer: [] for layer in layers}
        if progress is not None:
            progress(min(start + batch_size, len(order)), len(order))
    backbone.train(was_training)
    return len(order)


class StepFeatureCollator:
    """Batches of cached step features: ``step_features`` ``[B, S, H]``, ``attention_mask`` ``[B, S]`` (1 on
    real steps), ``labels`` ``[B, S]`` (-100 on padding) and the integer ``keep_columns``.

    Each feature dict carries its ``feature_key`` and, optionally, per-step ``labels``.
    """

    def __init__(self, cache: StepFeatureCache, layer: int, keep_columns: tuple[str, ...] = ()) -> None:
        self.cache, self.layer, self.keep_columns = cache, layer, keep_columns

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        states = [self.cache.get(f["feature_key"], self.layer) for f in features]
        batch = {
            "step_features": pad_sequence(states, batch_first=True),
            "attention_mask": pad_sequence([torch.ones(len(s), dtype=torch.long) for s in states], batch_first=True),
        }
        if "labels" in features[0]:
            labels = [torch.tensor(f["labels"], dtype=torch.long) for f in features]
            batch["labels"] = pad_sequence(labels, batch_first=True, padding_value=IGNORE_INDEX)
        for column in (c for c in self.keep_columns if c in features[0]):
            batch[column] = torch.tensor([f[column] for f in features])
        return batch


def step_feature_rows(tokenized: Any, separator_token_id: int) -> Any:
    """A tokenised dataset (`StepTokenizer` rows) for `StepFeatureCollator`: each row gets its ``feature_key``
    and its ``labels`` at the separators only (one per step)."""

    def at_steps(record: dict[str, Any]) -> dict[str, Any]:
        ids = record["input_ids"]
        labels = [label for token, label in zip(ids, record["labels"]) if token == separator_token_id]
        return {"feature_key": trajectory_key(ids), "labels": labels}

    return tokenized.map(at_steps, desc="Keying step features")
