"""Importing the kit before bitsandbytes keeps the terminal free of the notices about its optional hub
kernel, online and offline, and only those."""
import logging
import os
import subprocess
import sys

import pytest

from mixdpo_kit.core.notices import BITSANDBYTES_KERNEL_REPO, NOTICE_LOGGERS


@pytest.mark.parametrize("offline", ["0", "1"])
def test_importing_bitsandbytes_after_the_kit_prints_no_kernel_notice(offline):
    env = {**os.environ, "HF_HUB_OFFLINE": offline}
    res = subprocess.run([sys.executable, "-c", "import mixdpo_kit, peft, bitsandbytes"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "kernels" not in res.stdout + res.stderr, res.stderr


def test_only_the_kernel_notices_are_dropped(caplog):
    import mixdpo_kit  # noqa: F401  (installs the filters)

    for name in NOTICE_LOGGERS:
        with caplog.at_level(logging.WARNING, logger=name):
            caplog.clear()
            logging.getLogger(name).warning("Failed to load CPU kernel from %s: untrusted", BITSANDBYTES_KERNEL_REPO)
            logging.getLogger(name).warning("another repository: untrusted")
        assert [r.getMessage() for r in caplog.records] == ["another repository: untrusted"], name
