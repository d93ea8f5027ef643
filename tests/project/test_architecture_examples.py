"""The worked examples in docs/architecture.md run as written and plug into the registries."""
import re
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

from mixdpo_kit.core.config import RunConfig
from mixdpo_kit.data import formats
from mixdpo_kit.data.loading import normalise
from mixdpo_kit.margins import sources as margins
from mixdpo_kit.objectives import losses
from mixdpo_kit.objectives import routing as objectives
from mixdpo_kit.workflows import variants

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


@pytest.fixture
def registered():
    registries = (losses.PREFERENCE_LOSSES, objectives.OBJECTIVES, margins.MARGIN_SOURCES, variants.VARIANTS,
                  formats.FORMATS)
    before = tuple(dict(r) for r in registries)
    for block in re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S):
        exec(compile(block, str(DOC), "exec"), {})
    yield
    for registry, saved in zip(registries, before):
        registry.clear()
        registry.update(saved)


def test_doc_examples_register_a_loss_an_objective_and_a_margin_source(registered):
    cfg = objectives.resolve(RunConfig().override(loss={"objective": "preference", "preference": "robust_dpo",
                                                        "flip": 0.2}))
    assert cfg.loss.params == {"beta": 0.1, "flip": 0.2}
    lp = losses.PairLogps(torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([1.0]), torch.tensor([1.0]),
                          torch.tensor([-1.0]), torch.tensor([-1.0]))
    assert torch.isfinite(objectives.bound_loss(cfg.loss)(lp)).all()
    with pytest.raises(ValueError, match="flip"):
        RunConfig().override(loss={"objective": "preference", "preference": "robust_dpo", "flips": 0.2})
    assert objectives.resolve(RunConfig().override(loss={"objective": "mixipo"})).loss.preference == "ipo"
    ds = datasets.Dataset.from_list([{"chosen": "a b c", "rejected": "a"}, {"chosen": "a", "rejected": "a b"}])
    assert margins.compute_margins(ds, "length_gap").tolist() == [2.0, -1.0]
    assert np.isfinite(margins.compute_margins(ds, "length_gap")).all()
    linear = variants.variants_for(["mixdpo_linear_lr"])["mixdpo_linear_lr"]
    assert linear == {"loss": {"objective": "mixdpo"}, "train": {"lr_scheduler_type": "linear"}}


def test_doc_example_registers_a_data_format_recognised_by_its_columns(registered):
    raw = datasets.Dataset.from_list([{"question": "q1", "answer_a": "yes", "answer_b": "no", "ups_a": 5, "ups_b": 2},
                                      {"question": "q2", "answer_a": "x", "answer_b": "y", "ups_a": 1, "ups_b": 1}])
    ds, report = normalise(raw)
    assert report.format == "thumbs" and report.dropped == {"equal thumbs: no chosen answer": 1}
    assert (ds[0]["chosen"], margins.compute_margins(ds, "data").tolist()) == ("yes", [3.0])
