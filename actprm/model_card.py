"""Hub cards: the model card of a trained PRM and the dataset card of the labels its judge made.

Both are rendered from the Jinja templates in ``hub_cards/`` by `huggingface_hub`'s ``from_template``.
The model card's ``model-index`` holds the ProcessBench and PRMBench results of ``actprm eval`` (its
``summary.json``, as a dict), so that the Hub shows them and
`huggingface_hub.repocard_data.model_index_to_eval_results` reads them back; metric types are the
summary's keys and values are percentages.

How a model was trained is kept beside it in `TRAINING_REPORT_FILE`, written with the card, so that a
later ``actprm push`` can rebuild the card with new evaluation results.

The templates are package resources (``actprm/hub_cards``, a link to the checkout's ``hub_cards/``
that a wheel ships as files), read with `importlib.resources`.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from datasets import Dataset
from huggingface_hub import CardData, DatasetCard, DatasetCardData, EvalResult, ModelCard, ModelCardData, RepoCard

from .hub_utils import hub_repo_id
from .judges import ANNOTATION_FEATURES
from .metrics.formatting import format_percent as _percent, is_defined as _defined
from .modeling import EnsemblePRMConfig

if TYPE_CHECKING:
    from .judges import Judge
    from .training_args import ActivePRMConfig

CardT = TypeVar("CardT", bound=RepoCard)

TEMPLATE_FOLDER = "hub_cards"
MODEL_CARD_TEMPLATE = "model_card_template.md"
DATASET_CARD_TEMPLATE = "dataset_card_template.md"
TRAINING_REPORT_FILE = "active_learning.json"
CARD_TAGS = ("actprm", "process-reward-model", "active-learning", "math")
TASK = {"task_type": "text-classification", "task_name": "Process reward modeling"}

BENCHMARKS = {
    "processbench": {"name": "ProcessBench", "dataset": "Qwen/ProcessBench", "metrics": ("error_acc", "correct_acc", "f1")},
    "prmbench": {"name": "PRMBench", "dataset": "hitsmy/PRMBench_Preview", "metrics": ("prm_score", "f1", "negative_f1")},
}
"""What the model card reads from an ``actprm eval`` summary of each benchmark (``summary["benchmark"]``)."""
METRIC_NAMES = {
    "error_acc": "Error accuracy",
    "correct_acc": "Correct accuracy",
    "f1": "F1",
    "prm_score": "PRMScore",
    "negative_f1": "Negative F1",
}
STATISTICS = {
    "seen": "Trajectories seen",
    "selected": "Selected (uncertain)",
    "annotations": "Annotated",
    "judge_calls": "Judge calls",
    "judge_tokens": "Judge tokens",
    "judge_cache_hits": "Judge cache hits",
    "judge_failures": "Judge failures",
    "trained": "Trained on",
}
"""Active-learning counters the model card shows, in order, with their row names."""
COLUMN_DESCRIPTIONS = {
    "id": "Identifier of the solution in its source.",
    "problem": "The math problem.",
    "steps": "The solution, one string per step.",
    "label": "0-based index of the first wrong step; -1 when every step is correct.",
    "step_labels": "Per step: 1 good, 0 wrong, null unknown.",
    "judge": "Identity of the judge that made the label (model and settings).",
    "prompt_version": "Version of the judge's critique prompt; null for judges without one.",
    "tokens": "Tokens the judge spent on this solution.",
    "raw_output": "What the judge wrote.",
    "annotated_at": "When the label was made (ISO 8601, UTC).",
}
SELECTION_SETTINGS = {
    "uncertainty": (
        "selection_strategy", "pred_threshold", "std_threshold", "uncertainty_threshold", "selection_rate",
        "random_share", "importance_weighting",
    ),
    "random": ("random_selection_rate",),
    "all": (),
}  # fmt: skip
"""The `ActivePRMConfig` fields of each selection rule that the training report keeps."""
BUDGET_SETTINGS = ("active_warmup_steps", "max_annotations", "max_judge_tokens")
REPORTED_HYPERPARAMETERS = (
    "learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "num_train_epochs",
    "max_length", "label_mode", "use_chat_template", "system_prompt", "seed",
)  # fmt: skip
SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"))


def card_template_path(name: str) -> Path:
    """Path of a card template (`MODEL_CARD_TEMPLATE` or `DATASET_CARD_TEMPLATE`), a resource of the package.

    Raises:
        FileNotFoundError: if the installed package lacks it.
    """
    template = resources.files("actprm") / TEMPLATE_FOLDER / name
    if not template.is_file():
        raise FileNotFoundError(f"card template {name} is not among actprm's package files ({template})")
    return Path(str(template))


@dataclass
class TrainingReport:
    """How a model was trained, as its card tells it; saved beside the model as `TRAINING_REPORT_FILE`.

    Attributes:
        mode: ``"online"`` (a judge labelled the selected trajectories) or ``"pool"`` (their own labels).
        judge: the judge's identity (`Judge.identity`), ``None`` in pool mode.
        prompt_version: version of the judge's critique prompt, ``None`` for judges without one.
        datasets: Hub ids of the training data.
        pool_size: number of trajectories in the training pool.
        selection: the selection rule (``rule``) and its settings, as in `ActivePRMConfig`.
        hyperparameters: optimisation settings and the number of steps run.
        statistics: the active-learning counters (`ActivePRMTrainer.active_learning_summary`).
    """

    mode: str
    judge: str | None = None
    prompt_version: str | None = None
    datasets: list[str] = field(default_factory=list)
    pool_size: int | None = None
    selection: dict[str, Any] = field(default_factory=dict)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    statistics: dict[str, int] = field(default_factory=dict)

    @classmethod
    def for_run(cls, args: ActivePRMConfig, judge: Judge | None = None, pool_size: int | None = None) -> TrainingReport:
        """The report of a run with these settings, before it trains; `update` adds what training did."""
        settings = SELECTION_SETTINGS[args.selection] + BUDGET_SETTINGS
        hyperparameters = {name: getattr(args, name) for name in REPORTED_HYPERPARAMETERS}
        return cls(
            mode="online" if judge is not None else "pool",
            judge=judge.identity if judge is not None else None,
            prompt_version=judge.prompt_version if judge is not None else None,
            pool_size=pool_size,
            selection={"rule": args.selection, **{name: getattr(args, name) for name in settings}},
            hyperparameters={**hyperparameters, "num_processes": args.world_size, "training_steps": 0},
        )

    def update(self, training_steps: int, statistics: Mapping[str, int]) -> None:
        """Record the optimisation steps run so far and the active-learning counters (summed over processes)."""
        self.hyperparameters["training_steps"] = training_steps
        self.statistics = {name: int(value) for name, value in statistics.items()}

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the report as JSON into ``directory``; returns the file."""
        path = Path(directory) / TRAINING_REPORT_FILE
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike) -> TrainingReport | None:
        """The report saved in ``directory``, ``None`` if there is none.

        Raises:
            ValueError: if the file is not a report (naming the file).
        """
        path = Path(directory) / TRAINING_REPORT_FILE
        if not path.is_file():
            return None
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, TypeError) as error:
            raise ValueError(f"{path}: not an actprm training report ({error})") from None


def describe_selection(selection: Mapping[str, Any]) -> str:
    """One paragraph saying which trajectories were labelled and trained on, and under which budgets."""
    rule = selection.get("rule")
    strategy, rate = selection.get("selection_strategy", "actprm"), selection.get("selection_rate")
    if rule == "uncertainty" and (strategy != "actprm" or rate):
        chosen = f"the {rate:.0%} of each batch it found most uncertain" if rate else (
            f"every trajectory scoring above {selection['uncertainty_threshold']:g}"
        )
        text = f"Acquisition strategy `{strategy}` (`actprm.selection`): {chosen} was labelled and trained on."
    elif rule == "uncertainty":
        threshold = selection["pred_threshold"]
        text = (
            "ActPRM's uncertainty rule: a trajectory was skipped when, on every step up to its predicted first error, "
            f"the heads agreed (standard deviation <= {selection['std_threshold']:g}) and were sure (mean probability "
            f">= {threshold:g} or <= {1 - threshold:g}); every other trajectory was labelled and trained on."
        )
    elif rule == "random":
        text = f"Random: each trajectory was labelled and trained on with probability {selection['random_selection_rate']:g}."
    elif rule == "all":
        text = "All: every trajectory was labelled and trained on (full annotation)."
    else:
        return "Not recorded."
    if selection.get("random_share"):
        text += f" A random share of {selection['random_share']:g} was mixed in (epsilon-greedy)" + (
            ", each selected trajectory's loss weighted by the inverse of its selection probability."
            if selection.get("importance_weighting") else "."
        )  # fmt: skip
    if selection.get("active_warmup_steps"):
        text += f" The first {selection['active_warmup_steps']} training steps selected every trajectory."
    budgets = [
        f"{selection[name]} {what}"
        for name, what in (("max_annotations", "annotations"), ("max_judge_tokens", "judge tokens"))
        if selection.get(name) is not None
    ]
    return text + (f" Budget: at most {' and '.join(budgets)}." if budgets else "")


def _require(summary: Mapping[str, Any], keys: Iterable[str], where: str) -> None:
    missing = [key for key in keys if key not in summary]
    if missing:
        raise ValueError(f"{where} lacks {', '.join(missing)}: pass the summary.json that `actprm eval` wrote")


def _check_summaries(summaries: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The evaluation summaries by benchmark, checked: known benchmark, one summary each, expected keys."""
    by_benchmark: dict[str, Mapping[str, Any]] = {}
    for summary in summaries:
        benchmark = summary.get("benchmark")
        if benchmark not in BENCHMARKS:
            raise ValueError(f"evaluation summary of unknown benchmark {benchmark!r}; expected one of {', '.join(BENCHMARKS)}")
        if benchmark in by_benchmark:
            raise ValueError(f"two {BENCHMARKS[benchmark]['name']} summaries: pass one per benchmark")
        metrics = BENCHMARKS[benchmark]["metrics"]
        if benchmark == "processbench":
            _require(summary, ("threshold", "per_subset", "average", "weighted_average"), "ProcessBench summary")
            for name, scores in {**summary["per_subset"], "average": summary["average"]}.items():
                _require(scores, metrics, f"ProcessBench summary, {name}")
        else:
            _require(summary, ("threshold", "per_classification", *metrics), "PRMBench summary")
        by_benchmark[benchmark] = summary
    return by_benchmark


def eval_results_from_summaries(summaries: Iterable[Mapping[str, Any]]) -> list[EvalResult]:
    """`EvalResult`s of ``actprm eval`` summaries, in percent: per ProcessBench subset (as its split) and their
    average, and PRMBench overall. Undefined metrics (NaN, or PRMBench's -1) are left out.

    Raises:
        ValueError: for an unknown benchmark, two summaries of one benchmark, or a summary lacking a key.
    """
    results = []
    for benchmark, summary in _check_summaries(summaries).items():
        info = BENCHMARKS[benchmark]
        if benchmark == "processbench":
            groups = [(subset, scores, "") for subset, scores in summary["per_subset"].items()]
            groups.append((None, summary["average"], " (average over subsets)"))
        else:
            groups = [(None, summary, "")]
        for split, scores, suffix in groups:
            results.extend(
                EvalResult(
                    **TASK,
                    dataset_type=info["dataset"],
                    dataset_name=info["name"],
                    dataset_split=split,
                    metric_type=metric,
                    metric_name=METRIC_NAMES[metric] + suffix,
                    metric_value=round(100 * scores[metric], 2),
                )
                for metric in info["metrics"]
                if _defined(scores[metric])
            )
    return results


def _benchmark_tables(summaries: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any] | None]:
    """Template context of the evaluation section: one table per benchmark, numbers in percent."""

    def row(name: str, scores: Mapping[str, float], metrics: Sequence[str], **extra: Any) -> dict[str, Any]:
        return {"name": name, **extra, **{metric: _percent(scores[metric]) for metric in metrics}}

    tables: dict[str, dict[str, Any] | None] = dict.fromkeys(BENCHMARKS)
    if "processbench" in summaries:
        summary, metrics = summaries["processbench"], BENCHMARKS["processbench"]["metrics"]
        size = summary.get("num_items", "")
        rows = [row(s, scores, metrics, size=scores.get("num_items", "")) for s, scores in summary["per_subset"].items()]
        rows.append(row("**Average**", summary["average"], metrics, size=size))
        rows.append(row("Size-weighted average", summary["weighted_average"], metrics, size=size))
        calibration = summary.get("calibration")
        tables["processbench"] = {
            "dataset": BENCHMARKS["processbench"]["dataset"],
            "threshold": f"{summary['threshold']:g}",
            "calibration": calibration["subset"] if calibration else None,
            "rows": rows,
        }
    if "prmbench" in summaries:
        summary, metrics = summaries["prmbench"], BENCHMARKS["prmbench"]["metrics"]
        rows = [row(name, scores, metrics) for name, scores in summary["per_classification"].items()]
        rows.append(row("**Overall**", summary, metrics))
        tables["prmbench"] = {
            "dataset": BENCHMARKS["prmbench"]["dataset"],
            "threshold": f"{summary['threshold']:g}",
            "rows": rows,
        }
    return tables


def _statistics_rows(statistics: Mapping[str, int]) -> list[tuple[str, str]]:
    rows = [(label, f"{statistics[name]:,}") for name, label in STATISTICS.items() if name in statistics]
    seen, selected = statistics.get("seen"), statistics.get("selected")
    if seen and selected is not None:
        rows.insert(2, ("Selected / seen", f"{selected / seen:.1%}"))
    if statistics.get("confident_with_label"):
        accuracy = statistics["confident_correct"] / statistics["confident_with_label"]
        rows.append(("Accuracy of the skipped (confident) predictions", f"{accuracy:.1%}"))
    return rows


def build_model_card(
    config: EnsemblePRMConfig,
    model_id: str,
    *,
    training: TrainingReport | None = None,
    eval_summaries: Iterable[Mapping[str, Any]] = (),
    base_model: str | None = None,
    datasets: Sequence[str] | None = None,
    license: str | None = None,
    tags: Sequence[str] = (),
) -> ModelCard:
    """The model card of an `EnsemblePRMModel`.

    Args:
        config: the model's config.
        model_id: its Hub id (the card's title, usage snippets and ``model-index`` name).
        training: how it was trained; without it the card says training was not recorded.
        eval_summaries: ``summary.json`` contents of ``actprm eval`` (at most one per benchmark).
        base_model: Hub id of the backbone; by default the backbone's ``name_or_path`` when it is a Hub id.
        datasets: Hub ids of the training data; by default ``training.datasets``.
        license: licence of the weights (a Hub licence id); left out when ``None``.
        tags: tags added to `CARD_TAGS` (the tags `ActivePRMTrainer` puts on its model).

    Raises:
        ValueError: for evaluation summaries that `eval_results_from_summaries` refuses.
    """
    summaries = _check_summaries(eval_summaries)
    backbone = config.backbone_config
    base_model = base_model or hub_repo_id(getattr(backbone, "name_or_path", None))
    datasets = list(datasets if datasets is not None else training.datasets if training else [])
    card_data = ModelCardData(
        language="en",
        license=license,
        library_name="actprm",
        base_model=base_model,
        datasets=datasets or None,
        tags=list(dict.fromkeys([*CARD_TAGS, *tags])),
        model_name=model_id,
        eval_results=eval_results_from_summaries(summaries.values()) or None,
    )
    model = {
        "backbone": f"{backbone.model_type} ({backbone.num_hidden_layers} layers, hidden size {backbone.hidden_size})",
        **{
            name: getattr(config, name)
            for name in ("num_ensemble", "head_hidden_size", "separator", "separator_token_id",
                         "regularization_lambda", "learning_probability")
        },
    }
    return _render_card(
        ModelCard,
        card_data,
        MODEL_CARD_TEMPLATE,
        training,
        model_id=model_id,
        model=model,
        statistics=_statistics_rows(training.statistics) if training else [],
        **_benchmark_tables(summaries),
    )


def _render_card(
    card_class: type[CardT],
    card_data: CardData,
    template: str,
    training: TrainingReport | None,
    *,
    not_recorded: str | None = None,
    **variables: Any,
) -> CardT:
    """Render a card from a package template, given the run's report (``training``) and its selection rule
    (``selection``, or ``not_recorded`` without a report)."""
    return card_class.from_template(
        card_data,
        template_path=str(card_template_path(template)),
        training=training,
        selection=describe_selection(training.selection) if training else not_recorded,
        **variables,
    )


def _size_category(num_rows: int) -> str:
    return next((name for limit, name in SIZE_CATEGORIES if num_rows < limit), "n>1M")


def _type_name(feature: Any) -> str:
    inner = getattr(feature, "feature", None)
    return f"list of {_type_name(inner)}" if inner is not None else feature.dtype


def describe_judge_evaluation(summary: Mapping[str, Any], judges: Iterable[str]) -> str:
    """One line on a judge's measured ProcessBench accuracy (the summary of ``actprm eval --judge``).

    Raises:
        ValueError: if ``summary`` is no judge evaluation, or rates a judge not among ``judges``.
    """
    _require(summary, ("judge", "average", "num_items", "num_unparseable"), "the judge evaluation summary")
    judges = list(judges)
    if summary["judge"] not in judges:
        raise ValueError(
            f"the judge evaluation rates {summary['judge']}, but the labels come from {', '.join(judges)}: "
            "evaluate the judge that made them"
        )
    average = summary["average"]
    return (
        f"ProcessBench F1 {_percent(average['f1'])}% (average over {', '.join(summary['per_subset'])}; error "
        f"accuracy {_percent(average['error_acc'])}%, correct accuracy {_percent(average['correct_acc'])}%; "
        f"{summary['num_unparseable']} of {summary['num_items']} answers unparseable), measured with `actprm eval --judge`"
    )


def build_dataset_card(
    dataset: Dataset,
    repo_id: str,
    *,
    training: TrainingReport | None = None,
    source: str | None = None,
    license: str | None = None,
    pretty_name: str | None = None,
    judge_evaluation: Mapping[str, Any] | None = None,
) -> DatasetCard:
    """The dataset card of judge-labelled trajectories (an `AnnotationStore`'s dataset).

    Args:
        dataset: rows with the columns of `ANNOTATION_FEATURES`.
        repo_id: the dataset's Hub id.
        training: the report of the run that made the labels: its selection rule goes in the card.
        source: Hub id of the dataset the problems and solutions come from; by default the first of
            ``training.datasets``.
        license: licence of the dataset (a Hub licence id), normally that of its source; left out when ``None``.
        pretty_name: the card's title; by default the repo name.
        judge_evaluation: the ``summary.json`` of ``actprm eval --judge`` for the judge that made the
            labels: its measured ProcessBench F1 goes in the card.

    Raises:
        ValueError: if ``dataset`` lacks a column of `ANNOTATION_FEATURES` or has no row, or
            ``judge_evaluation`` rates another judge.
    """
    missing = [column for column in ANNOTATION_FEATURES if column not in dataset.column_names]
    if missing:
        raise ValueError(f"the dataset lacks the annotation column(s) {missing}; build it with AnnotationStore.to_dataset")
    if dataset.num_rows == 0:
        raise ValueError("the dataset has no row: nothing to describe")
    source = source or (training.datasets[0] if training and training.datasets else None)
    pretty_name = pretty_name or repo_id.split("/")[-1]
    labels = dataset["label"]
    step_labels = Counter(label for row in dataset["step_labels"] for label in row)
    dates = sorted(dataset["annotated_at"])
    judges = Counter(dataset["judge"]).most_common()
    judge_accuracy = (
        describe_judge_evaluation(judge_evaluation, [judge for judge, _ in judges]) if judge_evaluation else None
    )
    card_data = DatasetCardData(
        language="en",
        license=license,
        annotations_creators="machine-generated",
        task_categories=["text-classification"],
        size_categories=[_size_category(dataset.num_rows)],
        pretty_name=pretty_name,
        tags=list(CARD_TAGS),
    )
    return _render_card(
        DatasetCard,
        card_data,
        DATASET_CARD_TEMPLATE,
        training,
        not_recorded="Not recorded.",
        repo_id=repo_id,
        pretty_name=pretty_name,
        judges=judges,
        judge_accuracy=judge_accuracy or "Not measured.",
        prompt_versions=Counter(str(v) if v else "none" for v in dataset["prompt_version"]).most_common(),
        annotated_from=dates[0],
        annotated_to=dates[-1],
        counts={
            "rows": dataset.num_rows,
            "steps": sum(len(steps) for steps in dataset["steps"]),
            "correct": sum(label == -1 for label in labels),
            "with_error": sum(label is not None and label >= 0 for label in labels),
            "tokens": f"{sum(dataset['tokens']):,}",
        },
        label_distribution=sorted(Counter(labels).items(), key=lambda item: (item[0] is None, item[0])),
        step_label_distribution=[
            (name, step_labels[value]) for value, name in ((1, "1 (good)"), (0, "0 (wrong)"), (None, "null (unknown)"))
        ],
        schema=[
            {"name": name, "type": _type_name(feature), "description": COLUMN_DESCRIPTIONS.get(name, "")}
            for name, feature in dataset.features.items()
        ],
        source=hub_repo_id(source),
    )
