"""The ensemble process reward model: a causal-LM backbone with E small MLP heads read at step separators.

A separator token closes every step. At each position, ``E`` independent two-hidden-layer ReLU MLPs
(computed together in batched einsums) give one logit each; ``sigmoid`` of a logit is that head's
probability that the step just closed is correct. The spread of the heads is the uncertainty that
ActPRM's active learning selects on. Each head trains on its own random subset of the batch and is
pulled towards a frozen copy of its initial weights, which keeps the ensemble diverse.

The parameter layout (``model.*`` for the backbone, ``score.model.nn1|nn2|nn_out`` for the heads with
weights ``[E, in, out]`` and biases ``[E, out]``, ``score.reg_model.*`` for the frozen anchor) is the
one of the checkpoints released with the paper (``sail/ActPRM``, ``sail/ActPRM-X``), whose Qwen2-style
``config.json`` :meth:`EnsemblePRMConfig.get_config_dict` converts on load.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from huggingface_hub.dataclasses import strict
from safetensors import safe_open
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.configuration_utils import SubConfigSpec
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, ModelOutput, cached_file

from .gguf_loading import load_backbone_tokenizer, load_gguf_backbone
from .hub_utils import download_options
from .tokenization import DEFAULT_SEPARATOR, IGNORE_INDEX, add_separator_token

__all__ = [
    "EnsembleHead",
    "EnsemblePRMConfig",
    "EnsemblePRMModel",
    "EnsemblePRMOutput",
    "add_separator_token",
]

MODEL_TYPE = "actprm_ensemble"
RELEASE_ENSEMBLE_KEYS = {
    "num_ensemble": "num_ensemble",
    "learning_probability": "learning_probability",
    "regularization_lambda": "regularization_lambda",
    "rr_token": "separator",
    "rr_token_id": "separator_token_id",
}
"""Keys the ActPRM release adds to its Qwen2 ``config.json``, and their names in `EnsemblePRMConfig`."""
RELEASE_HEAD_KEY = "score.model.nn1.weight"
RELEASE_HEAD_HIDDEN_SIZE = 128


@strict
class EnsemblePRMConfig(PreTrainedConfig):
    r"""Configuration of an [`EnsemblePRMModel`].

    Args:
        backbone_config (`dict` or `PreTrainedConfig`, *optional*):
            Config of any causal LM that `AutoModel` can build (Qwen2, Llama, Mistral, ...); a dict needs its
            `model_type`.
        num_ensemble (`int`, defaults to 8): number of heads `E`.
        head_hidden_size (`int`, defaults to 128): width of both hidden layers of every head.
        learning_probability (`float`, defaults to 1.0):
            In training, each (head, sample) pair of a batch is kept in the loss with this probability.
        regularization_lambda (`float`, defaults to 0.5): weight of the pull towards the initial heads.
        separator (`str`, defaults to `"<extra_0>"`): the token closing every step.
        separator_token_id (`int`, *optional*): its id in the tokenizer the model is used with.
        use_chat_template (`bool`, defaults to `False`):
            Inputs put the problem in a user turn and the steps in the assistant turn of the tokenizer's
            chat template. `ActivePRMTrainer` records its setting here; scorers follow it.
        system_prompt (`str`, *optional*): with `use_chat_template`, the system turn before the problem.
        hidden_layer (`int`, defaults to -1):
            The backbone hidden state the heads read: an index into its `hidden_states` (0 the embeddings,
            `num_hidden_layers` or -1 the last layer, after the final norm).

    Example:
        ```py
        >>> from transformers import AutoConfig
        >>> from actprm import EnsemblePRMConfig, default_backbone
        >>> config = EnsemblePRMConfig(backbone_config=AutoConfig.from_pretrained(default_backbone()), num_ensemble=4)
        >>> config.num_ensemble, config.separator
        (4, '<extra_0>')
        ```
    """

    model_type = MODEL_TYPE
    sub_configs_defaults = {
        "backbone_config": SubConfigSpec(config_class=AutoConfig, model_type="qwen2", optional=True),
    }
    keys_to_ignore_at_inference = ["classification_loss", "regularization_loss", "hidden_states"]

    backbone_config: dict | PreTrainedConfig | None = None
    num_ensemble: int = 8
    head_hidden_size: int = 128
    learning_probability: float | int = 1.0
    regularization_lambda: float | int = 0.5
    separator: str = DEFAULT_SEPARATOR
    separator_token_id: int | None = None
    use_chat_template: bool = False
    system_prompt: str | None = None
    hidden_layer: int = -1

    def validate_ensemble(self) -> None:
        """Part of `@strict` validation: the ensemble options are in range."""
        if self.num_ensemble < 1 or self.head_hidden_size < 1:
            raise ValueError(
                f"num_ensemble and head_hidden_size must be >= 1, got {self.num_ensemble} and {self.head_hidden_size}"
            )
        if not 0 < self.learning_probability <= 1:
            raise ValueError(f"learning_probability must be in (0, 1], got {self.learning_probability}")
        if self.regularization_lambda < 0:
            raise ValueError(f"regularization_lambda must be >= 0, got {self.regularization_lambda}")
        vocab_size = getattr(self.backbone_config, "vocab_size", None)
        separator_token_id = self.separator_token_id
        if separator_token_id is not None and vocab_size is not None and not 0 <= separator_token_id < vocab_size:
            raise ValueError(
                f"separator_token_id {separator_token_id} is outside the backbone vocabulary ({vocab_size})"
            )
        num_layers = getattr(self.backbone_config, "num_hidden_layers", None)
        if num_layers is not None and not -num_layers - 1 <= self.hidden_layer <= num_layers:
            raise ValueError(f"hidden_layer {self.hidden_layer} is outside [-{num_layers + 1}, {num_layers}]")

    def get_text_config(self, decoder: bool | None = None, encoder: bool | None = None) -> PreTrainedConfig:
        """The backbone's config: what transformers reads and updates for vocabulary and attention settings."""
        if self.backbone_config is None:
            return super().get_text_config(decoder=decoder, encoder=encoder)
        return self.backbone_config.get_text_config(decoder=decoder, encoder=encoder)

    @classmethod
    def get_config_dict(
        cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Read `config.json`, converting the ActPRM release format (a Qwen2 config with ensemble keys)."""
        hub_kwargs = download_options(kwargs, trust_remote_code=True)
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        model_type = config_dict.get("model_type")
        if model_type == cls.model_type:
            return config_dict, kwargs
        if "num_ensemble" not in config_dict:
            raise ValueError(
                f"{pretrained_model_name_or_path} holds a {model_type!r} model, not an ensemble PRM; "
                f"start from it with EnsemblePRMModel.from_backbone({str(pretrained_model_name_or_path)!r})"
            )
        backbone = {k: v for k, v in config_dict.items() if k not in RELEASE_ENSEMBLE_KEYS}
        for key in ("architectures", "auto_map", "problem_type", "id2label", "label2id", "head_hidden_size"):
            backbone.pop(key, None)
        converted = {new: config_dict[old] for old, new in RELEASE_ENSEMBLE_KEYS.items() if old in config_dict}
        converted["head_hidden_size"] = config_dict.get("head_hidden_size") or _release_head_hidden_size(
            pretrained_model_name_or_path, hub_kwargs
        )
        dtype = backbone.get("dtype", backbone.get("torch_dtype"))
        converted |= {"model_type": cls.model_type, "backbone_config": backbone, "dtype": dtype}
        return converted, kwargs


def _release_head_hidden_size(name_or_path: str | os.PathLike, hub_kwargs: dict[str, Any]) -> int:
    """Width of the heads in a safetensors checkpoint, read from the tensor header (128, the release's, if absent)."""
    index = cached_file(
        name_or_path, SAFE_WEIGHTS_INDEX_NAME, _raise_exceptions_for_missing_entries=False, **hub_kwargs
    )
    if index is not None:
        with open(index, encoding="utf-8") as handle:
            filename = json.load(handle)["weight_map"].get(RELEASE_HEAD_KEY)
    else:
        filename = SAFE_WEIGHTS_NAME
    weights = filename and cached_file(
        name_or_path, filename, _raise_exceptions_for_missing_entries=False, **hub_kwargs
    )
    if weights is None:
        return RELEASE_HEAD_HIDDEN_SIZE
    with safe_open(weights, framework="pt") as handle:
        if RELEASE_HEAD_KEY not in handle.keys():
            return RELEASE_HEAD_HIDDEN_SIZE
        return handle.get_slice(RELEASE_HEAD_KEY).get_shape()[-1]


@dataclass
class EnsemblePRMOutput(ModelOutput):
    """Output of [`EnsemblePRMModel.forward`].

    Args:
        loss: `classification_loss + regularization_lambda * regularization_loss`, when labels are given.
        logits: `[num_ensemble, batch, seq]` float32 logits of "the step closed here is correct".
        classification_loss: mean over heads of each head's BCE on its kept labelled positions.
        regularization_loss: mean squared distance of the head parameters to their frozen anchor.
        hidden_states: the backbone's hidden states, when `output_hidden_states=True`.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    classification_loss: torch.FloatTensor | None = None
    regularization_loss: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


class EnsembleLinear(nn.Module):
    """`E` independent affine maps: weight `[E, in, out]`, bias `[E, out]` (buffers when not trainable)."""

    def __init__(self, num_ensemble: int, in_features: int, out_features: int, trainable: bool = True) -> None:
        super().__init__()
        self.in_features = in_features
        weight, bias = torch.empty(num_ensemble, in_features, out_features), torch.empty(num_ensemble, out_features)
        if trainable:
            self.weight, self.bias = nn.Parameter(weight), nn.Parameter(bias)
        else:
            self.register_buffer("weight", weight)
            self.register_buffer("bias", bias)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """`[N, in]` (shared by all heads) or `[E, N, in]` (one slice per head) -> `[E, N, out]`."""
        if inputs.dim() == 2:
            return torch.einsum("ni,eio->eno", inputs, self.weight) + self.bias.unsqueeze(1)
        return torch.baddbmm(self.bias.unsqueeze(1), inputs, self.weight)


class EnsembleMLP(nn.Module):
    """`E` MLPs `in -> h -> h -> 1` with ReLU between layers, evaluated together."""

    def __init__(self, num_ensemble: int, in_features: int, hidden_size: int, trainable: bool = True) -> None:
        super().__init__()
        self.nn1 = EnsembleLinear(num_ensemble, in_features, hidden_size, trainable)
        self.nn2 = EnsembleLinear(num_ensemble, hidden_size, hidden_size, trainable)
        self.nn_out = EnsembleLinear(num_ensemble, hidden_size, 1, trainable)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`[..., in]` -> `[E, ...]` logits."""
        flat = hidden_states.reshape(-1, hidden_states.shape[-1])
        activations = F.relu(self.nn2(F.relu(self.nn1(flat))))
        return self.nn_out(activations).reshape(-1, *hidden_states.shape[:-1])


class EnsembleHead(nn.Module):
    """The trained heads (`model`) and the frozen copy of their initial weights (`reg_model`, buffers)."""

    def __init__(self, num_ensemble: int, in_features: int, hidden_size: int) -> None:
        super().__init__()
        self.model = EnsembleMLP(num_ensemble, in_features, hidden_size)
        self.reg_model = EnsembleMLP(num_ensemble, in_features, hidden_size, trainable=False)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`[..., in]` hidden states -> `[E, ...]` logits, computed in the heads' dtype and device."""
        weight = self.model.nn1.weight
        return self.model(hidden_states.to(device=weight.device, dtype=weight.dtype))

    def regularization(self) -> torch.Tensor:
        """Mean over all head parameters of the squared distance to the anchor (float32).

        Every head has the same number of parameters, so this is also the mean over heads of each
        head's mean squared distance; it is the normalisation of the ActPRM release.
        """
        anchors = dict(self.reg_model.named_buffers())
        trained = dict(self.model.named_parameters())
        squared = torch.stack([(param.float() - anchors[name].float()).pow(2).sum() for name, param in trained.items()])
        return squared.sum() / sum(param.numel() for param in trained.values())


class EnsemblePRMModel(PreTrainedModel):
    """A causal-LM backbone (`model`) with an ensemble of MLP heads (`score`) read at step separators.

    Heads run in the model's dtype (bf16 when the model is loaded in bf16); logits, probabilities and
    losses are float32.

    Example:
        ```py
        >>> from actprm import EnsemblePRMModel, default_backbone
        >>> model = EnsemblePRMModel.from_backbone(default_backbone(), num_ensemble=8)  # a new ensemble head
        >>> model.save_pretrained("my-prm")
        >>> model = EnsemblePRMModel.from_pretrained("my-prm")  # or a Hub id such as "sail/ActPRM"
        ```
    """

    config_class = EnsemblePRMConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["EnsembleHead"]
    # The loss is a mean over heads, not a sum over tokens: Trainer must not pass `num_items_in_batch`.
    accepts_loss_kwargs = False
    # Attention lives in the backbone, which checks its own support for each implementation.
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True

    def __init__(self, config: EnsemblePRMConfig, backbone: PreTrainedModel | None = None) -> None:
        super().__init__(config)
        if backbone is None:
            if config.backbone_config is None:
                raise ValueError("EnsemblePRMConfig.backbone_config is required to build an EnsemblePRMModel")
            backbone = AutoModel.from_config(config.backbone_config)
        self.model = backbone
        self.score = EnsembleHead(config.num_ensemble, backbone.config.hidden_size, config.head_hidden_size)
        self.backbone_frozen = False
        self.post_init()

    def freeze_backbone(self) -> None:
        """Freeze the backbone for heads trained on cached step features: no gradients, and it stays in eval
        mode, so `train()` and `zero_grad()` walk only the heads (on features, the backbone's hundreds of
        modules made those walks most of a training step's time)."""
        self.model.requires_grad_(False)
        self.model.eval()
        self.backbone_frozen = True

    def train(self, mode: bool = True) -> "EnsemblePRMModel":
        if not self.backbone_frozen:
            return super().train(mode)
        self.training = mode
        self.score.train(mode)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        (self.score if self.backbone_frozen else super()).zero_grad(set_to_none)

    def _init_weights(self, module: nn.Module) -> None:
        """Heads: truncated normal (std 1/(2 sqrt(fan_in)), cut at 2 std), zero biases; anchor: their copy.

        transformers visits the trained layers before the anchor's, so each anchor layer copies an
        initialised (or loaded) trained layer; a loaded anchor is left as loaded.
        """
        if not isinstance(module, EnsembleLinear):
            return
        for name, anchor in self.score.reg_model.named_children():
            if anchor is module:
                trained = getattr(self.score.model, name)
                init.copy_(module.weight, trained.weight)
                init.copy_(module.bias, trained.bias)
                return
        std = 1 / (2 * math.sqrt(module.in_features))
        init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
        init.zeros_(module.bias)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        step_features: torch.Tensor | None = None,
        loss_weights: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> EnsemblePRMOutput:
        """Logits of every head at every position, and the loss when `labels` are given.

        Args:
            input_ids: `[batch, seq]` token ids, a separator token after every step.
            attention_mask: `[batch, seq]`, 1 for real tokens (with `step_features`: `[batch, steps]`).
            labels: `[batch, seq]`: 1 (step correct) or 0 at separator positions, -100 everywhere else
                (with `step_features`: `[batch, steps]`, -100 on padding).
            position_ids: passed to the backbone (e.g. for packed sequences).
            step_features: instead of `input_ids`, `[batch, steps, hidden]` cached hidden states of
                `config.hidden_layer` at the step separators (`actprm.features`): the backbone does not run.
            loss_weights: `[batch]` weight of each row in the loss (importance weighting); equal when omitted.
            kwargs: passed to the backbone (e.g. `output_hidden_states`).
        """
        hidden_states = None
        if step_features is None:
            kwargs.setdefault("use_cache", False)
            reads_last = self.config.hidden_layer in (-1, self.config.get_text_config().num_hidden_layers)
            if not reads_last:
                kwargs.setdefault("output_hidden_states", True)
            outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs)
            hidden_states = outputs.hidden_states
            step_features = outputs.last_hidden_state if reads_last else hidden_states[self.config.hidden_layer]
        logits = self.score(step_features).float()
        loss = classification_loss = regularization_loss = None
        if labels is not None:
            loss, classification_loss, regularization_loss = self.ensemble_loss(logits, labels, loss_weights)
        return EnsemblePRMOutput(
            loss=loss,
            logits=logits,
            classification_loss=classification_loss,
            regularization_loss=regularization_loss,
            hidden_states=hidden_states,
        )

    def ensemble_loss(
        self, logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`(loss, classification_loss, regularization_loss)` for `[E, B, T]` logits and `[B, T]` labels.

        In training mode each (head, sample) pair is kept with probability `learning_probability`; each
        head's BCE is averaged over its kept labelled positions, and heads left with none are skipped
        in the mean over heads; with `weights` (`[B]`) that average is weighted by each position's row.
        `loss = classification_loss + regularization_lambda * regularization_loss`.
        """
        if labels.shape != logits.shape[1:]:
            raise ValueError(f"labels of shape {tuple(labels.shape)} do not match logits {tuple(logits.shape)}")
        logits = logits.float()
        labels = labels.to(logits.device)
        kept = (labels != IGNORE_INDEX).unsqueeze(0)
        probability = self.config.learning_probability
        if self.training and probability < 1:
            kept = kept & (torch.rand(logits.shape[0], logits.shape[1], 1, device=logits.device) < probability)
        kept = kept.expand_as(logits).float()
        if weights is not None:
            kept = kept * weights.to(logits.device).float().view(1, -1, 1)
        targets = labels.clamp(min=0).float().expand_as(logits)
        per_position = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        counts = kept.sum(dim=(1, 2))
        per_head = (per_position * kept).sum(dim=(1, 2)) / torch.where(counts > 0, counts, 1.0)
        active = (counts > 0).float()
        classification_loss = (per_head * active).sum() / active.sum().clamp(min=1)
        regularization_loss = self.score.regularization().to(logits.device)
        loss = classification_loss + self.config.regularization_lambda * regularization_loss
        return loss, classification_loss, regularization_loss

    @torch.no_grad()
    def ensemble_probabilities(
        self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None, **kwargs: Any
    ) -> torch.Tensor:
        """`[E, batch, seq]` float32 probabilities that the step closed at each position is correct."""
        return torch.sigmoid(self(input_ids, attention_mask=attention_mask, **kwargs).logits)

    def step_scores(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        step_features: torch.Tensor | None = None,
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per row, `(mean, std)` over heads of P(correct) at each separator, in order (std unbiased).

        With `step_features` (see `forward`), every position that `attention_mask` keeps is a step.
        """
        per_row = self.step_probabilities(input_ids, attention_mask, step_features)
        return [(steps.mean(dim=0), steps.std(dim=0)) for steps in per_row]

    def step_probabilities(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        step_features: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """Per row, every head's P(correct) at each separator (each kept step with `step_features`): `[E, steps]`."""
        probabilities = self.ensemble_probabilities(input_ids, attention_mask, step_features=step_features)
        if step_features is not None:
            at_separator = torch.ones(probabilities.shape[1:], dtype=torch.bool)
        else:
            separator_token_id = self.config.separator_token_id
            if separator_token_id is None:
                raise ValueError(
                    "config.separator_token_id is not set; build the model with EnsemblePRMModel.from_backbone"
                )
            at_separator = input_ids == separator_token_id
        if attention_mask is not None:
            at_separator &= attention_mask.bool().to(at_separator.device)
        at_separator = at_separator.to(probabilities.device)
        return [probabilities[:, row, at_separator[row]] for row in range(probabilities.shape[1])]

    @classmethod
    def from_backbone(
        cls,
        name_or_path: str | os.PathLike,
        *,
        tokenizer: Any = None,
        separator: str = DEFAULT_SEPARATOR,
        num_ensemble: int = 8,
        head_hidden_size: int = 128,
        learning_probability: float = 1.0,
        regularization_lambda: float = 0.5,
        gguf_file: str | os.PathLike | None = None,
        **load_kwargs: Any,
    ) -> EnsemblePRMModel:
        """A new ensemble head on a pretrained causal LM loaded with `AutoModel.from_pretrained`.

        `load_kwargs` (`dtype`, `device_map`, `attn_implementation`, `revision`, ...) go to
        `AutoModel.from_pretrained`. The separator is added to `tokenizer` (in place) when missing and
        the embeddings are resized to fit; without `tokenizer`, the one at `name_or_path` is loaded: add
        the separator to the tokenizer you encode with by `add_separator_token`, which gives the same id.

        With `gguf_file` (a path, or a file of the folder or Hub repo `name_or_path`), backbone and
        tokenizer come from that GGUF checkpoint (needs the `gguf` package), checked first and
        de-quantised on load; the model saves as ordinary safetensors.
        """
        if tokenizer is None:
            tokenizer = load_backbone_tokenizer(name_or_path, gguf_file, **load_kwargs)
        separator_token_id = add_separator_token(tokenizer, separator)
        if gguf_file is not None:
            backbone = load_gguf_backbone(name_or_path, gguf_file, **load_kwargs)
        else:
            backbone = AutoModel.from_pretrained(name_or_path, **load_kwargs)
        old_size = backbone.get_input_embeddings().num_embeddings
        if len(tokenizer) > old_size:  # new rows: the mean embedding, the same in every process (no random draw)
            weight = backbone.resize_token_embeddings(len(tokenizer), mean_resizing=False).weight
            with torch.no_grad():
                weight[old_size:] = weight[:old_size].double().mean(dim=0).to(weight.dtype)
        config = EnsemblePRMConfig(
            backbone_config=backbone.config,
            num_ensemble=num_ensemble,
            head_hidden_size=head_hidden_size,
            learning_probability=learning_probability,
            regularization_lambda=regularization_lambda,
            separator=separator,
            separator_token_id=separator_token_id,
            dtype=backbone.dtype,
            attn_implementation=backbone.config._attn_implementation,
        )
        model = cls(config, backbone=backbone)
        model.score.to(device=backbone.device, dtype=backbone.dtype)
        return model


AutoConfig.register(MODEL_TYPE, EnsemblePRMConfig, exist_ok=True)
AutoModel.register(EnsemblePRMConfig, EnsemblePRMModel, exist_ok=True)
