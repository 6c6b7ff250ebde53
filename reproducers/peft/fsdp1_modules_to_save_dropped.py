"""peft drops an adapter's modules_to_save copy from save_pretrained(state_dict=...) under FSDP1.

Two adapters, each with its own copy of `head` (modules_to_save), wrapped with FullyShardedDataParallel
(use_orig_params=False) and peft's own fsdp_auto_wrap_policy, as accelerate does for peft. The inactive adapter's
copy is frozen, so the policy leaves it in the root unit, whose flat parameter takes its parameters away from the
module. The gathered full state dict (FULL_STATE_DICT) still holds that copy and is passed to save_pretrained,
but peft's ModulesToSaveWrapper.adapter_state_dict picks the keys to save from the live copy's own state_dict(),
which is empty there: the copy is silently left out of the adapter's file, and loading that adapter gives the
untrained module. One process (a world of one rank, gloo, CPU) shows it; use_orig_params=True does not.

Run: python reproducers/peft/fsdp1_modules_to_save_dropped.py   (torch 2.13 CPU, peft 0.21.2)
"""

import tempfile

import torch
import torch.distributed as dist
from peft import LoraConfig, get_peft_model
from peft.utils.other import fsdp_auto_wrap_policy
from safetensors.torch import load_file
from torch import nn
from torch.distributed.fsdp import FullStateDictConfig, StateDictType
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP


def model() -> nn.Module:
    torch.manual_seed(0)
    base = nn.Sequential()
    base.add_module("fc", nn.Linear(8, 16))
    base.add_module("head", nn.Linear(16, 4))
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["fc"], modules_to_save=["head"]))
    peft_model.add_adapter("other", LoraConfig(r=2, target_modules=["fc"], modules_to_save=["head"]))
    peft_model.set_adapter("default")
    return peft_model


def saved_keys(peft_model: nn.Module, state_dict: dict) -> set[str]:
    """The keys of adapter 'other' in what save_pretrained writes."""
    with tempfile.TemporaryDirectory() as out:
        peft_model.save_pretrained(out, state_dict=state_dict)
        return set(load_file(f"{out}/other/adapter_model.safetensors"))


with tempfile.TemporaryDirectory() as rendezvous:
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}/store", rank=0, world_size=1)
    plain = model()
    expected = saved_keys(plain, plain.state_dict())  # without FSDP: other's factors and its copy of head

    inner = model()
    policy = fsdp_auto_wrap_policy(inner)
    sharded = FSDP(inner, auto_wrap_policy=policy, use_orig_params=False, device_id=torch.device("cpu"))
    with FSDP.state_dict_type(sharded, StateDictType.FULL_STATE_DICT, FullStateDictConfig(rank0_only=False)):
        full = sharded.state_dict()
    copy_keys = {k for k in full if ".modules_to_save.other." in k}
    got = saved_keys(inner, full)
    dist.destroy_process_group()

assert copy_keys, "the gathered full state dict should hold adapter 'other''s copy of head"
assert got == expected, (
    f"peft saved {sorted(got)} for adapter 'other' from the gathered FSDP1 state dict, but {sorted(expected)} "
    "without FSDP: "
    f"the modules_to_save copy {sorted(expected - got)} was dropped although the state dict passed to "
    f"save_pretrained holds it as {sorted(copy_keys)}"
)
