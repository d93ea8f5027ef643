"""One configuration object for the CLI, the notebooks and the tests.

A run is described by :class:`RunConfig`, a tree of small dataclasses. It round-trips through
YAML (loaded with ``yaml.safe_load``; unknown keys are an error that names them) and can start
from a named preset such as ``mixdpo_paper``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from mixdpo_kit.core.errors import MissingFile, UserError


def setting(default=dataclasses.MISSING, help: str = "", flag: str | None = None, factory=None):
    """A config field with its help text and, for the most used settings, a short command-line flag
    (``--tau``); ``mixdpo-kit`` makes a ``--section.field`` flag of every field from these."""
    meta = {"help": help, "flag": flag}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    """Where the preference pairs come from and how they are tokenised."""

    source: str = setting("builtin", "'builtin', 'ultrafeedback-sample' (real rated pairs, shipped), a .jsonl[.gz]/"
                          ".json/.parquet/.csv file, or a hub dataset", flag="--data")
    split: str = setting("train_prefs", "the split the training pairs are read from", flag="--split")
    eval_source: str | None = setting("builtin", "where the held-out pairs come from (none: no held-out evaluation)")
    eval_split: str = setting("test_prefs", "the split the held-out pairs are read from")
    max_rows: int | None = setting(None, "take the first N rows (after loading), for quick runs", flag="--max-rows")
    max_length: int = setting(1024, "prompt + response tokens")
    max_prompt_length: int = setting(512, "prompt tokens kept (its end) when a pair is too long")
    truncation: str = setting("truncate", "truncate (keep the prompt's end, the response's start) | drop over-long pairs")
    score_order: str = setting("keep", "a chosen score below the rejected one: keep | swap | drop (each counted)")
    format: str = setting("auto", "the schema: auto (recognised by the columns) | preference | argilla_dpo_mix | "
                          "argilla_ultrafeedback | helpsteer2 | helpsteer3 | shp | pku_saferlhf | nectar | ultrafeedback "
                          "| columns (mixdpo-kit formats lists them)", flag="--format")
    columns: dict[str, str] = setting(factory=dict, help="a column map for any other schema: prompt, chosen, rejected "
                                      "[, score_chosen, score_rejected], or prompt, response_a, response_b, label "
                                      "(0 or a: A is chosen), e.g. prompt=question,chosen=good,rejected=bad")
    pairing: str = setting("best_vs_random", "K-wise data (Nectar, raw UltraFeedback) as pairs: best_vs_random "
                           "(UltraFeedback-binarized's rule, seeded) | best_vs_worst | all_pairs", flag="--pairing")
    rating: str = setting("overall_score", "raw UltraFeedback's rating: overall_score | fine_grained (the mean of "
                          "its four aspect ratings)", flag="--rating")
    preference_label: str = setting("better", "PKU-SafeRLHF's chosen response: better | safer")
    pairing_seed: int = setting(0, "the seed of best_vs_random")
    subset: str | None = setting(None, "a hub dataset's configuration (load_dataset's name), e.g. preference")
    data_dir: str | None = setting(None, "a hub dataset's folder (load_dataset's data_dir), e.g. preference for "
                                   "nvidia/HelpSteer2")


@dataclass
class MarginConfig:
    """Where each pair's difficulty margin comes from (larger = easier)."""

    source: str = setting("data", "data (the data's own margin: its ratings' gap, HelpSteer's preference strength, "
                          "SHP's vote ratio (data:log_score_ratio its log), Nectar's rank gap) | "
                          "ratings (score_chosen - score_rejected) | score_chosen | score_rejected | "
                          "reward_model | likelihood_gap (the reference's per-token log-likelihood gap) | "
                          "ches (minus the reference's length-normalised CHES score; ches:raw unnormalised) | "
                          "column:NAME (a numeric column of the data)", flag="--margin-source")
    reward_model: str | None = setting(None, "for source reward_model: a sequence-classification model",
                                       flag="--reward-model")
    normalize: str = setting("raw", "raw | zscore | rank (rank: in [0, 1])", flag="--normalize")
    batch_size: int = setting(16, "pairs per batch when a model scores them")


@dataclass
class SplitConfig:
    """Which pairs are hard (routed to SFT): margin < tau, or below a quantile of the margins."""

    tau: float = setting(0.5, "hard = margin < tau (a tau given as a flag replaces a quantile split from the "
                         "config)", flag="--tau")
    quantile: float | None = setting(None, "when set, tau = this quantile of the margins", flag="--quantile")


@dataclass
class CurriculumConfig:
    """The order pairs are trained in."""

    order: str = setting("easy_to_hard", "easy_to_hard | staged | random | hard_to_easy")
    n_stages: int = setting(3, "stages of the staged order")
    seed: int = setting(0, "the shuffle's seed (random order, and ties)")


@dataclass
class ModelConfig:
    """The policy model and how its reference is obtained."""

    name_or_path: str = setting("tiny-llama", "a hub id or a local directory; tiny-* builds a local tiny model")
    revision: str | None = setting(None, "the hub revision (a branch, tag or commit)")
    mode: str = setting("qlora", "qlora | lora | full")
    lora_r: int = setting(16, "LoRA rank")
    lora_alpha: int = setting(32, "LoRA alpha")
    lora_dropout: float = setting(0.0, "LoRA dropout (dropout makes policy and reference log-probs inconsistent)")
    target_modules: str | list[str] = setting("all-linear", "the modules LoRA adapts: all-linear, or names")
    ref_model: str | None = setting(None, "a separate reference model (default: the policy with its adapter off)")
    dtype: str = setting("auto", "auto | float32 | bfloat16 | float16")
    gradient_checkpointing: str | bool = setting("auto", "auto (on for GPU (Q)LoRA, off on CPU) | true | false")
    trust_remote_code: bool = setting(False, "run a hub model's own code")
    # One row per preference pair, its prompt computed once for both responses (same numbers;
    # off: one row per response, the prompt twice). Attention that cannot take the mask falls back,
    # and a batch whose shared rows would cost the decoder more (short prompts, long responses, a
    # narrow model) keeps separate rows: see modeling/pairbatch.py.
    share_prompt: bool = setting(True, "one row per pair, the prompt computed once for both responses, in each "
                                 "batch where that costs less")


@dataclass
class LossConfig:
    """The objective (see ``mixdpo-kit objectives``), its routing weights, and the parameters of
    its preference loss and of the objective itself.

    In YAML those parameters sit beside the other keys (``loss: {objective: dpo_nll, beta: 0.1,
    nll_weight: 0.5}``); they are checked against the objective and its preference loss when the
    config loads, and a resolved config (``objectives.resolve``) lists every one of them with the
    value that ran.
    """

    objective: str = setting("mixdpo", "a registered objective: mixdpo, dpo, filtered_dpo, beta_dpo, ...")
    preference: str = setting("dpo", "the preference loss of objectives that do not pin one (mixdpo, preference)")
    sft_weight: float = setting(1.0, "the SFT term's weight on SFT-routed pairs")
    preference_weight: float = setting(1.0, "the preference loss's weight on preference-routed pairs")
    params: dict[str, Any] = setting(factory=dict, help="the preference loss's parameters (see objectives/losses.py) "
                                     "and the objective's own settings (see objectives/routing.py)")


@dataclass
class TrainConfig:
    """Optimisation and run bookkeeping (mapped onto transformers.TrainingArguments)."""

    output_dir: str = setting("runs/mixdpo", "the run folder", flag="--out")
    learning_rate: float = setting(1e-6, "peak learning rate")
    num_train_epochs: float = setting(1.0, "epochs")
    max_steps: int = setting(-1, "cap the training steps (-1: the epochs decide)", flag="--max-steps")
    per_device_train_batch_size: int = setting(4, "pairs per step on each device")
    gradient_accumulation_steps: int = setting(1, "steps accumulated per optimiser step")
    lr_scheduler_type: str = setting("cosine", "transformers' schedule name: cosine, linear, constant, ...")
    warmup_ratio: float = setting(0.1, "the share of steps spent warming up")
    weight_decay: float = setting(0.0, "AdamW weight decay")
    logging_steps: int = setting(1, "log every this many steps")
    save_steps: int = setting(500, "save a checkpoint every this many steps")
    save_total_limit: int | None = setting(2, "checkpoints kept (none: all)")
    seed: int = setting(42, "the training seed")
    precompute_reference: bool = setting(True, "compute the reference log-probs once, before training")
    report_to: str = setting("none", "transformers' loggers: none, tensorboard, wandb, ...")


# What the kit computes once and keeps, each in its own folder of the cache.
CACHE_KINDS = ("reference", "reward_scores", "ches", "judge", "sft_answers", "models")


@dataclass
class CacheConfig:
    """The one folder the kit keeps what it computes once: reference log-probs, model-based margins,
    the judge's scores and the SFT model's answers, and the models it builds (``tiny-*``). Apart
    from it the kit writes only into the run folder."""

    dir: str = setting(".mixdpo_cache", "the cache folder (reference log-probs, margins, judge, built models)",
                       flag="--cache-dir")

    def path(self, kind: str) -> Path:
        """The folder of one kind of cached thing (one of :data:`CACHE_KINDS`)."""
        if kind not in CACHE_KINDS:
            raise ValueError(f"unknown cache kind {kind!r}; choose one of {CACHE_KINDS}")
        return Path(self.dir) / kind


@dataclass
class EvalConfig:
    """Held-out evaluation."""

    batch_size: int = setting(16, "pairs per batch when scoring")
    max_pairs: int | None = setting(500, "held-out pairs evaluated (none: all)")
    n_generations: int = setting(8, "prompts whose generations are shown in the report")
    max_new_tokens: int = setting(64, "tokens generated per prompt in the report")
    reward_prompts: int = setting(64, "built-in task: prompts scored with the ground-truth reward")
    reward_split: str = setting("eval_prompts", "built-in task: dev_prompts to choose settings, eval_prompts to report")
    track_every: int = setting(0, "> 0: log held-out chosen/rejected log-probs every this many steps")
    track_pairs: int = setting(64, "held-out pairs tracked")


@dataclass
class SFTWarmupConfig:
    """The demo's supervised warm-up that turns a random tiny model into an "SFT model"."""

    enabled: bool = setting(False, "train an SFT model first (the built-in task's random tiny model)")
    split: str = setting("sft", "the split of demonstrations it trains on")
    max_steps: int = setting(300, "its steps")
    learning_rate: float = setting(3e-3, "its learning rate")
    batch_size: int = setting(32, "its batch size")


DEFAULT_COMPARISON = ["mixdpo", "dpo", "cdpo", "filtered_dpo", "sft", "dpo_nll", "curriculum_dpo", "simpo",
                      "beta_dpo", "amapo", "madpo"]


@dataclass
class CompareConfig:
    """What ``mixdpo-kit compare`` runs: objectives or named variants (:mod:`mixdpo_kit.workflows.variants`),
    each over this many seeds."""

    objectives: list[str] = setting(factory=lambda: list(DEFAULT_COMPARISON), flag="--objectives",
                                    help="comma-separated objectives or variants, e.g. mixdpo,dpo,mixdpo_constant_lr,"
                                         "mixdpo_tau_3 (mixdpo-kit objectives lists them)")
    seeds: int = setting(3, "seeds per objective", flag="--seeds")


@dataclass
class JudgeConfig:
    """Judge a run's answers against its SFT model (the reference, adapter off) with a local reward
    model, as ``mixdpo-kit judge`` does; off while ``reward_model`` is None. See docs/evaluation.md."""

    reward_model: str | None = setting(None, "also judge the run's answers against the SFT model's with this "
                                       "sequence-classification reward model (path or hub name)",
                                       flag="--judge-reward-model")
    prompts: str = setting("alpaca_eval", "the prompt set the judge uses (alpaca_eval, arena_hard, builtin, ...) "
                           "or a file", flag="--judge-prompts")
    max_prompts: int | None = setting(100, "the first N prompts of it (none: all)", flag="--judge-max-prompts")
    max_new_tokens: int = setting(1024, "tokens generated per answer")
    batch_size: int = setting(8, "prompts per generation batch")
    score_batch_size: int = setting(16, "answers per reward-model batch")
    max_length: int = setting(2048, "tokens the reward model reads per answer")
    bootstrap: int = setting(1000, "bootstrap resamples for the 95 % intervals")


@dataclass
class RunConfig:
    """Everything a run needs; serialisable to and from YAML."""

    data: DataConfig = field(default_factory=DataConfig)
    margins: MarginConfig = field(default_factory=MarginConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    sft_warmup: SFTWarmupConfig = field(default_factory=SFTWarmupConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)

    def to_dict(self) -> dict[str, Any]:
        """A plain nested dict (YAML/JSON-ready); the loss parameters sit flat in ``loss``."""
        out = dataclasses.asdict(self)
        out["loss"] = {**{k: v for k, v in out["loss"].items() if k != "params"}, **out["loss"]["params"]}
        return out

    def to_yaml(self, path: str | Path | None = None) -> str:
        """Serialise to YAML; also write it to ``path`` when given (its folder made if missing)."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        """Build from a nested dict; unknown sections or keys, and loss parameters the chosen loss
        does not have, raise ``ValueError`` naming them."""
        cfg = _from_dict(cls, _upgrade_legacy(data or {}), "config")
        for check in CONFIG_CHECKS:
            check(cfg)
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path) -> "RunConfig":
        """Load a YAML file with the safe loader. A ``preset:`` key starts from that preset."""
        if not Path(path).is_file():
            raise MissingFile(f"config file not found: {path}")
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as err:
            raise UserError(f"{path}: not valid YAML ({err})") from None
        if not isinstance(data, dict):
            raise UserError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
        preset_name = data.pop("preset", None)
        base = preset(preset_name).to_dict() if preset_name else {}
        return cls.from_dict(deep_merge(base, data))

    def override(self, **sections: dict[str, Any]) -> "RunConfig":
        """A copy with some fields replaced, e.g. ``cfg.override(loss={"beta": 0.1})``."""
        return RunConfig.from_dict(deep_merge(self.to_dict(), sections))


# Fields that may hold a local path: in a run folder's config.yaml, a path inside the folder is
# written relative to it, so the folder can be moved or copied and still reloaded.
PATH_FIELDS = (("model", "name_or_path"), ("train", "output_dir"), ("cache", "dir"), ("data", "source"),
               ("data", "eval_source"))


def write_run_config(cfg: RunConfig, run_dir: str | Path) -> Path:
    """Write ``run_dir/config.yaml``: paths inside the run folder relative to it (``sft_model``,
    ``cache``, ``.``), other local paths absolute, names (hub ids, ``builtin``) as they are."""
    run_dir = Path(run_dir).resolve()
    data = cfg.to_dict()
    for section, key in PATH_FIELDS:
        value = data[section][key]
        if not isinstance(value, str) or not value:
            continue
        path = Path(value).resolve()
        if path.is_relative_to(run_dir):  # also what the run has not made yet (its cache)
            data[section][key] = str(path.relative_to(run_dir))
        elif Path(value).exists():
            data[section][key] = str(path)
    target = run_dir / "config.yaml"
    target.write_text("# A run's record. Paths are relative to this folder.\n" + yaml.safe_dump(data, sort_keys=False))
    return target


def read_run_config(run_dir: str | Path) -> RunConfig:
    """A run folder's ``config.yaml`` with its folder-relative paths resolved against where the
    folder is now (from any working directory, after a move or a copy to another machine)."""
    run_dir = Path(run_dir)
    data = _upgrade_legacy(yaml.safe_load((run_dir / "config.yaml").read_text()))
    for check in LEGACY_READERS:
        check(data)
    for section, key in PATH_FIELDS:
        value = data.get(section, {}).get(key)
        if isinstance(value, str) and value and not Path(value).is_absolute() and (run_dir / value).exists():
            data[section][key] = str(run_dir / value)
    return RunConfig.from_dict(data)


# Checks that need the objectives (their parameters): mixdpo_kit.objectives registers them when it
# is imported, which the package's __init__ does first, so the config depends on no other stage.
CONFIG_CHECKS: list[Callable[[RunConfig], None]] = []  # run on every config built; raise ValueError
LEGACY_READERS: list[Callable[[dict], None]] = []  # fix a run folder's config.yaml (a dict) in place


def register_config_check(check: Callable[[RunConfig], None]) -> None:
    """Run ``check(cfg)`` on every config built (it raises ``ValueError`` naming what is wrong)."""
    CONFIG_CHECKS.append(check)


def register_legacy_reader(reader: Callable[[dict], None]) -> None:
    """Let ``reader`` bring an older run folder's config (a plain dict) up to date before it is built."""
    LEGACY_READERS.append(reader)


def _upgrade_legacy(data: dict) -> dict:
    # Configs written before the cache had its own section kept its folder in train.cache_dir.
    train = data.get("train")
    if isinstance(train, dict) and "cache_dir" in train:
        data = {**data, "train": {k: v for k, v in train.items() if k != "cache_dir"}}
        data["cache"] = {**(data.get("cache") or {}), "dir": train["cache_dir"]}  # the older key, given, wins
    return data


def _from_dict(cls, data: dict[str, Any], where: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if cls is LossConfig:  # the loss's own parameters: collected here, checked against the loss later
        data = dict(data)
        params = {**data.pop("params", {}), **{k: data.pop(k) for k in list(data) if k not in fields}}
        data["params"] = params
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {unknown}; known keys are {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        sub = _dataclass_type(fields[name])
        if sub is not None:
            if not isinstance(value, dict):
                raise UserError(f"{where}.{name}: expected a mapping, got {value!r}")
            kwargs[name] = _from_dict(sub, value, f"{where}.{name}")
        else:
            kwargs[name] = value
    return cls(**kwargs)


def _dataclass_type(f: dataclasses.Field):
    factory = f.default_factory
    if factory is not dataclasses.MISSING and dataclasses.is_dataclass(factory):
        return factory
    return None


def deep_merge(base: dict, update: dict) -> dict:
    """``base`` updated by ``update``, mappings merged key by key at every depth (neither changed)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _mixdpo_paper() -> RunConfig:
    # The authors' run: rating margins (the data's own margin), tau = 0.5, beta = 0.01, conservative DPO with eps = 0.1,
    # sequential easy->hard, one epoch, lr 1e-6 cosine with 10 % warm-up, 1024/512 tokens.
    return RunConfig(
        data=DataConfig(source="HuggingFaceH4/ultrafeedback_binarized", split="train_prefs",
                        eval_source="HuggingFaceH4/ultrafeedback_binarized", eval_split="test_prefs",
                        max_length=1024, max_prompt_length=512),
        margins=MarginConfig(source="data"),  # UltraFeedback-binarized's own: the rating gap
        split=SplitConfig(tau=0.5),
        curriculum=CurriculumConfig(order="easy_to_hard"),
        loss=LossConfig(objective="mixdpo", preference="dpo", params={"beta": 0.01, "label_smoothing": 0.1}),
        train=TrainConfig(learning_rate=1e-6, num_train_epochs=1, lr_scheduler_type="cosine", warmup_ratio=0.1),
    )


def _demo() -> RunConfig:
    # The built-in task on a CPU: tiny Llama, SFT warm-up, then QLoRA MixDPO. The learning rate
    # and beta are larger than the paper's because the model and the run are tiny.
    return RunConfig(
        data=DataConfig(source="builtin", split="train_prefs", eval_source="builtin", eval_split="test_prefs",
                        max_length=64, max_prompt_length=32),
        model=ModelConfig(name_or_path="tiny-llama", mode="qlora", lora_r=16, lora_alpha=32),
        loss=LossConfig(objective="mixdpo", preference="dpo", params={"beta": 0.1, "label_smoothing": 0.1}),
        train=TrainConfig(output_dir="runs/demo", learning_rate=1e-4, per_device_train_batch_size=16,
                          num_train_epochs=1, warmup_ratio=0.1, save_steps=50, logging_steps=5, seed=0),
        eval=EvalConfig(batch_size=64, max_pairs=200, n_generations=8, max_new_tokens=16, reward_prompts=256),
        sft_warmup=SFTWarmupConfig(enabled=True, max_steps=300, learning_rate=3e-3, batch_size=32),
    )


PRESETS = {"mixdpo_paper": _mixdpo_paper, "demo": _demo}


def preset(name: str) -> RunConfig:
    """A fresh copy of a named preset (``mixdpo_paper`` or ``demo``)."""
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()
