"""Library notices that say nothing to a user of the kit, dropped where they are logged.

bitsandbytes' CPU backend tries, when it is imported, to load an optional kernel from the
``kernels-community`` hub repository and logs that it could not (online: the publisher is not
trusted; offline, the ``kernels`` library first logs that it skipped the trust check). The kit
never uses that kernel (4-bit on CPU dequantises and multiplies), yet every script that imports
the kit would print the lines. Only records naming that repository are dropped, at the two loggers
that write them; bitsandbytes' and kernels' other warnings still show. Light on purpose: the
package's ``__init__`` calls it before anything imports bitsandbytes.
"""
from __future__ import annotations

import logging

BITSANDBYTES_KERNEL_REPO = "kernels-community/quantization-bitsandbytes"
# where the notices are logged (a logger's filter acts on its own records only)
NOTICE_LOGGERS = ("bitsandbytes.backends.cpu.ops", "kernels._internals.hf_hub")


class _DropKernelNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return BITSANDBYTES_KERNEL_REPO not in record.getMessage()


def drop_bitsandbytes_kernel_notice() -> None:
    """Drop the notices about bitsandbytes' optional hub kernel (idempotent); call before
    bitsandbytes is imported."""
    for name in NOTICE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropKernelNotice) for f in logger.filters):
            logger.addFilter(_DropKernelNotice())
