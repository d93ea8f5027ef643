"""mixdpo-kit: difficulty-aware preference optimisation (MixDPO) with QLoRA, notebook first.

The package is one folder per stage of the flow (see ``docs/architecture.md``). What the notebooks
and the README use is importable from here, ``from mixdpo_kit import run_demo, MarginExplorer``,
and stays put when a module moves; each name is imported on first use. ``import mixdpo_kit`` loads
the objectives alone (and torch with them): their registries check every config built.
"""
from __future__ import annotations

import importlib

from mixdpo_kit.core.notices import drop_bitsandbytes_kernel_notice

drop_bitsandbytes_kernel_notice()  # before anything imports bitsandbytes
from mixdpo_kit import objectives as _objectives  # noqa: E402, F401  (registers the config's loss checks)

# public name -> the module that defines it (a module itself where the name is the module's)
_PUBLIC = {
    # objectives: losses and routing
    "register_preference_loss": "objectives.losses", "log_ratio_margin": "objectives.losses",
    "PREFERENCE_LOSSES": "objectives.losses",
    "OBJECTIVES": "objectives.routing", "register_objective": "objectives.routing", "route_hard": "objectives.routing",
    "resolve": "objectives.routing",
    # core
    "RunConfig": "core.config", "CurriculumConfig": "core.config", "TrainConfig": "core.config",
    "preset": "core.config", "percent": "core.units",
    # data
    "synthetic": "data.synthetic", "load_preferences": "data.loading",
    # modeling
    "build_policy": "modeling.model", "cost_line": "modeling.cost", "estimate_table": "modeling.memory",
    "estimate_gpu_memory": "modeling.memory", "PUBLISHED_SHAPES": "modeling.shape",
    # margins
    "compute_margins": "margins.sources", "register_margin_source": "margins.sources",
    "rank_correlation": "margins.sources", "correlation_strength": "margins.sources",
    "agreement": "margins.sources", "split_by_margin": "margins.split", "paper_comparison": "margins.split",
    # reports
    "viz": "reports.viz", "read_metrics": "reports.report", "result_lines": "reports.explain",
    "report_lines": "reports.explain", "settings_lines": "reports.explain", "difference_line": "reports.explain",
    "level_line": "reports.explain", "lr_mass_line": "reports.explain", "worked_pairs_table": "reports.explain",
    # evaluation
    "Decoding": "evaluation.generation", "answer_with_run_and_reference": "evaluation.generation",
    "export_commands": "evaluation.generation", "judge_files": "evaluation.judge",
    "judgement_figure": "evaluation.judge", "verdict_lines": "evaluation.judge",
    # training
    "analyze_data": "training.pipeline", "data_report": "training.pipeline",
    "MixDPOConfig": "training.trl_style", "MixDPOTrainer": "training.trl_style",
    # workflows
    "run": "workflows.runs", "run_demo": "workflows.runs", "demo_config": "workflows.runs",
    "run_comparison": "workflows.compare", "table_lines": "workflows.compare", "verdict": "workflows.compare",
    "variant_config": "workflows.compare", "VARIANTS": "workflows.variants", "describe": "workflows.variants",
    "register_variant": "workflows.variants", "variants_for": "workflows.variants",
    "run_displacement": "workflows.displacement", "pair_displacement": "workflows.displacement",
    "ches_quartiles": "workflows.displacement", "change_words": "workflows.displacement",
    "ches_line": "workflows.displacement", "ches_vs_ratings": "workflows.displacement",
    "reference_config": "workflows.displacement",
    "DisplacementSetting": "workflows.displacement",
    # interface
    "setup_notebook": "interface.notebook", "gpu_branch": "interface.notebook",
    "gpu_run_settings": "interface.notebook", "MarginExplorer": "interface.margin_explorer",
    "CurriculumDesigner": "interface.curriculum_designer", "TrainingLauncher": "interface.training_launcher",
    "html_table": "interface.panel", "pairs_side_by_side": "interface.panel",
    "panel_choices_lines": "interface.panel", "with_panel_choices": "interface.panel",
    "DisplacementExplorer": "interface.displacement_explorer",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'mixdpo_kit' has no attribute {name!r}")
    module = importlib.import_module(f"mixdpo_kit.{_PUBLIC[name]}")
    value = module if _PUBLIC[name].rsplit(".", 1)[-1] == name else getattr(module, name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
