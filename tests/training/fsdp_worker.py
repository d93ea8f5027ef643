"""One rank launched with configs/accelerate/fsdp.yaml on CPU; run by tests/training/test_distributed.py.

    accelerate launch --config_file configs/accelerate/fsdp.yaml --num_processes 2 --mixed_precision no \
        tests/training/fsdp_worker.py MODEL_DIR OUT_DIR

Records the FSDP plugin accelerate builds from the launch environment (a dry parse of the config),
the kind of distribution accelerate picks on this machine, and what the kit says when asked to train.
"""
import json
import os
import sys
from pathlib import Path

from accelerate import FullyShardedDataParallelPlugin

from mixdpo_kit.core.distributed import end_processes, process_state

sys.path.insert(0, str(Path(__file__).parent))
from ddp_worker import main as train  # noqa: E402


if __name__ == "__main__":
    model_dir, out = sys.argv[1], Path(sys.argv[2])
    plugin = FullyShardedDataParallelPlugin()  # reads FSDP_* as accelerate launch set them
    record = {"fsdp_version": plugin.fsdp_version, "auto_wrap_policy": plugin.auto_wrap_policy.__name__,
              "state_dict_type": plugin.state_dict_type.name, "reshard_after_forward": plugin.reshard_after_forward,
              "cpu_ram_efficient_loading": plugin.cpu_ram_efficient_loading,
              "distributed_type": process_state().distributed_type.name}
    try:
        train(model_dir, str(out), 2)
        record["error"] = None
    except ValueError as err:
        record["error"] = str(err)
    (out / f"fsdp-rank{os.environ['RANK']}.json").write_text(json.dumps(record))
    end_processes()
