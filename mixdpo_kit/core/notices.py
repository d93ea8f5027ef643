"""Library notices that say nothing to a user of the kit, dropped where they are logged.

bitsandbytes' CPU backend logs, when it is imported, that it could not load an optional
``kernels-community`` kernel: the kit never uses it (4-bit on CPU dequantises and multiplies), yet
every script that imports the kit would print three lines about it. Only that record is dropped;
bitsandbytes' other warnings still show. Light on purpose: the package's ``__init__`` calls it
before anything imports bitsandbytes.
"""
from __future__ import annotations

import logging

BITSANDBYTES_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"  # where the notice is logged (a filter acts there only)


class _DropKernelNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "kernels-community" not in record.getMessage()


def drop_bitsandbytes_kernel_notice() -> None:
    """Drop bitsandbytes' optional-kernel notice (idempotent); call before bitsandbytes is imported."""
    logger = logging.getLogger(BITSANDBYTES_CPU_LOGGER)
    if not any(isinstance(f, _DropKernelNotice) for f in logger.filters):
        logger.addFilter(_DropKernelNotice())
