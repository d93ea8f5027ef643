"""Nothing unsafe by default: no pickle, torch.load or unsafe YAML anywhere in the package, and no remote code unless asked."""
import re
from pathlib import Path



ROOT = Path(__file__).resolve().parents[2]


def test_no_pickle_unsafe_yaml_or_remote_code_by_default():
    from mixdpo_kit.core.config import RunConfig

    sources = {p.name: p.read_text() for p in (ROOT / "mixdpo_kit").rglob("*.py")}
    for name, text in sources.items():
        assert not re.search(r"^\s*import pickle|torch\.load\(|yaml\.load\(|yaml\.unsafe_load", text, re.M), name
    assert RunConfig().model.trust_remote_code is False
    assert "trust_remote_code=cfg.trust_remote_code" in sources["model.py"]
