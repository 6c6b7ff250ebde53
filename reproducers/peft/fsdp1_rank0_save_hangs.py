"""peft's save_pretrained(state_dict=...) on rank 0 alone hangs under FSDP1 when a modules_to_save copy is its own unit.

The documented way to save a sharded model (accelerate, the Trainer): every rank gathers the full state dict, then
the main process alone calls save_pretrained(dir, state_dict=state). With peft's own fsdp_auto_wrap_policy the
trainable modules_to_save copy becomes an FSDP unit, and peft's ModulesToSaveWrapper.adapter_state_dict calls that
live copy's state_dict() (to list its keys), which FSDP turns into an all-gather: rank 0 waits in it for ranks
that are not saving, forever. The state dict was passed precisely so that nothing would be gathered again
(compare huggingface/transformers#35234 and pytorch/pytorch#143536, the same hang from the model's state_dict()).

Two CPU processes, gloo. Run: python reproducers/peft/fsdp1_rank0_save_hangs.py   (torch 2.13 CPU, peft 0.21.2)
"""

import multiprocessing as mp
import os
import tempfile
import time
from datetime import timedelta

import torch
import torch.distributed as dist
from peft import LoraConfig, get_peft_model
from peft.utils.other import fsdp_auto_wrap_policy
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

SAVE_SECONDS = 10  # a save of this tiny adapter takes milliseconds


def rank_main(rank: int, workdir: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{workdir}/store", rank=rank, world_size=2, timeout=timedelta(seconds=120)
    )
    torch.manual_seed(0)
    base = nn.Sequential()
    base.add_module("fc", nn.Linear(8, 16))
    base.add_module("head", nn.Linear(16, 4))
    inner = get_peft_model(base, LoraConfig(r=4, target_modules=["fc"], modules_to_save=["head"]))
    model = FSDP(inner, auto_wrap_policy=fsdp_auto_wrap_policy(inner), use_orig_params=True, device_id="cpu")
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))  # every rank
    open(f"{workdir}/gathered{rank}", "w").close()
    if rank == 0:
        inner.save_pretrained(f"{workdir}/adapter", state_dict=state)
        open(f"{workdir}/saved", "w").close()
    dist.barrier()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as workdir:
        ranks = [mp.get_context("spawn").Process(target=rank_main, args=(r, workdir)) for r in range(2)]
        for p in ranks:
            p.start()
        while not all(os.path.exists(f"{workdir}/gathered{r}") for r in range(2)):
            assert all(p.is_alive() or p.exitcode == 0 for p in ranks), "a rank failed before the save"
            time.sleep(0.1)
        deadline = time.monotonic() + SAVE_SECONDS
        while not os.path.exists(f"{workdir}/saved") and time.monotonic() < deadline:
            time.sleep(0.1)
        saved = os.path.exists(f"{workdir}/saved")
        for p in ranks:
            p.kill()
            p.join()
    assert saved, (
        f"peft's save_pretrained(state_dict=...) on rank 0 did not return within {SAVE_SECONDS} s of the gather: it "
        "hangs in an all-gather, because ModulesToSaveWrapper.adapter_state_dict calls state_dict() on the "
        "modules_to_save copy, an FSDP unit, on rank 0 alone"
    )
