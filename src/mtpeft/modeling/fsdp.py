"""Fully sharded data parallelism: torch's FSDP2 (`fully_shard`) applied by mtpeft itself.

Each process keeps 1/P of every parameter, gradient and AdamW moment; a block's weights are gathered
for its forward and backward and dropped after. Turned on by `distributed: {sharding: fsdp}` in the
config (torchrun) or by accelerate's own switch (`accelerate launch --use_fsdp`, `accelerate config`
with FSDP: ACCELERATE_USE_FSDP=true and its FSDP_* variables).

Why mtpeft applies it, not accelerate: accelerate 1.16 turns FSDP on only for GPU-like devices (its
state.py lists MULTI_GPU, NPU, XPU... not MULTI_CPU), so its FSDP path cannot run on CPU processes,
where torch's `fully_shard` works (gloo). Applying it here gives one code path on CPUs and GPUs, the one
that is tested; accelerate's switch is taken over before accelerate reads it
(`claim_accelerate_switch`) so that its Accelerator never wraps the model a second time.

The wrap policy is accelerate's and peft's for transformers: each block class the model names in
`_no_split_modules` is sharded as a unit, then the root (embeddings, heads, the rest). The loss
weighting's few learned numbers stay whole on every process (`ignored_params`): the trainer combines the
task losses with them outside the model's forward, where a sharded tensor is not gathered, and their
gradient comes from the global loss values, the same on every process, so nothing is lost by not
reducing it.

torch has the sharding, the state-dict gathering and the optimiser-state resharding; what is written
here is the bookkeeping between them and the trainer: the norms and dot products of gradients that are
partly sharded and partly whole (`clip_grad_norm_`, `sharded_dot`), which torch's clip_grad_norm_ does
not take mixed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from mtpeft.errors import MtpeftError

ACCELERATE_SWITCH = "ACCELERATE_USE_FSDP"
_CLAIMED = "MTPEFT_FSDP_FROM_ACCELERATE"  # the switch was on, and mtpeft took it over
MODEL_FILE = "fsdp_model.pt"  # a checkpoint's full model state (gathered from the shards)
OPTIMIZER_FILE = "fsdp_optimizer.pt"  # and AdamW's, full


@dataclass(frozen=True)
class FsdpSettings:
    source: str  # where it was turned on, for messages: a config field or accelerate's variable
    reshard_after_forward: bool = True  # False: keep blocks gathered until backward
    wrap_classes: tuple[str, ...] | None = None  # None: the model's `_no_split_modules`


def claim_accelerate_switch() -> None:
    """accelerate's FSDP switch, taken over before accelerate reads it (PartialState, Accelerator): on a
    GPU its Accelerator would otherwise shard the model again in `prepare`. Idempotent."""
    if os.environ.get(ACCELERATE_SWITCH, "false").lower() == "true":
        os.environ[_CLAIMED] = "true"
        os.environ[ACCELERATE_SWITCH] = "false"


def refuse_deepspeed() -> None:
    """DeepSpeed ZeRO is not supported: on CPUs accelerate 1.16 ignores ACCELERATE_USE_DEEPSPEED (it
    selects DeepSpeed only without `cpu`), which would quietly train with plain data parallelism."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        raise MtpeftError(
            "DeepSpeed (ACCELERATE_USE_DEEPSPEED, from accelerate config or launch --use_deepspeed) is not "
            "supported: shard the weights with FSDP instead (accelerate launch --use_fsdp, or "
            "`distributed: {sharding: fsdp}` with torchrun); see docs/scaling.md"
        )


def requested(config: Any) -> FsdpSettings | None:
    """The FSDP settings of this run, from the config or accelerate's switch; None: not sharded."""
    from_accelerate = os.environ.get(_CLAIMED) == "true" or os.environ.get(ACCELERATE_SWITCH) == "true"
    distributed = config.distributed
    if distributed.sharding == "fsdp":
        return FsdpSettings(
            "distributed.sharding",
            reshard_after_forward=distributed.reshard_after_forward,
            wrap_classes=tuple(distributed.wrap_classes) if distributed.wrap_classes else None,
        )
    if from_accelerate:
        return _from_accelerate_env()
    return None


# accelerate's FSDP variables: the ones with an effect here, and the values that cannot be honoured.
_REFUSED_FLAGS = {
    "FSDP_OFFLOAD_PARAMS": "CPU offload of the shards",
    "FSDP_ACTIVATION_CHECKPOINTING": "activation checkpointing",
}


def _from_accelerate_env() -> FsdpSettings:
    source = "accelerate's FSDP config (ACCELERATE_USE_FSDP)"
    for variable, what in _REFUSED_FLAGS.items():
        if os.environ.get(variable, "false").lower() == "true":
            raise MtpeftError(f"{variable}=true ({what}) is not supported by mtpeft's FSDP: turn it off")
    policy = os.environ.get("FSDP_AUTO_WRAP_POLICY", "TRANSFORMER_BASED_WRAP")
    if policy not in ("TRANSFORMER_BASED_WRAP", "NO_WRAP"):
        raise MtpeftError(
            f"FSDP_AUTO_WRAP_POLICY={policy} is not supported by mtpeft's FSDP: use TRANSFORMER_BASED_WRAP "
            "(each transformer block sharded as a unit) or NO_WRAP (the model as one unit)"
        )
    classes = os.environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP")
    wrap = tuple(c.strip() for c in classes.split(",") if c.strip()) if classes else None
    return FsdpSettings(
        source,
        reshard_after_forward=_reshard_flag(os.environ.get("FSDP_RESHARD_AFTER_FORWARD", "true")),
        wrap_classes=() if policy == "NO_WRAP" else wrap,
    )


def _reshard_flag(value: str) -> bool:
    """FSDP2's true/false, or FSDP1's sharding strategy names (accelerate maps them the same way)."""
    lowered = value.lower()
    if lowered in ("true", "1", "full_shard", "hybrid_shard"):
        return True
    if lowered in ("false", "0", "shard_grad_op", "no_shard", "hybrid_shard_zero2"):
        return False
    raise MtpeftError(f"FSDP_RESHARD_AFTER_FORWARD={value} is not understood: use true or false")


# ---- applying it -----------------------------------------------------------------------------------
def block_classes(model: nn.Module, transformer: nn.Module, names: tuple[str, ...] | None) -> set[type]:
    """The block classes sharded as units: `names`, else the transformers model's `_no_split_modules`
    (those it instantiates), as accelerate's FSDP2 auto-wrap policy picks them."""
    from accelerate.utils.dataclasses import get_module_class_from_name

    wanted = names if names is not None else tuple(getattr(transformer, "_no_split_modules", None) or ())
    classes = set()
    for name in wanted:
        found = get_module_class_from_name(model, name)
        if found is None and names is not None:
            raise MtpeftError(f"FSDP wrap class {name!r} is not a module class of this model")
        if found is not None:
            classes.add(found)
    return classes


def shard_model(
    model: nn.Module, transformer: nn.Module, settings: FsdpSettings, *, keep_whole: list[nn.Parameter]
) -> int:
    """Shard `model` in place over every process (blocks first, then the root); `keep_whole` stay
    replicated. Returns how many blocks were sharded as units."""
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    classes = tuple(block_classes(model, transformer, settings.wrap_classes))
    blocks = [m for m in model.modules() if classes and isinstance(m, classes)]
    whole = set(keep_whole)
    for block in blocks:
        # A block holding a kept parameter cannot be a unit of its own: leave it to the root.
        if not whole & set(block.parameters()):
            fully_shard(block, reshard_after_forward=settings.reshard_after_forward)
    fully_shard(model, reshard_after_forward=settings.reshard_after_forward, ignored_params=whole or None)
    # Prediction enters through `predict`, not `forward`: gather the root's shards there too.
    register_fsdp_forward_method(model, "predict")
    return len(blocks)


def split_sharded(group: dict[str, Any]) -> list[dict[str, Any]]:
    """An optimiser parameter group as two, its sharded parameters and its whole ones (the loss
    weighting's): AdamW's fused kernel refuses a group mixing DTensors and plain tensors."""
    kinds = ([p for p in group["params"] if is_sharded(p)], [p for p in group["params"] if not is_sharded(p)])
    return [group | {"params": params} for params in kinds if params]


def is_sharded(tensor: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This process's part of a sharded tensor; a whole (replicated) one as it is."""
    return tensor.to_local() if is_sharded(tensor) else tensor


# ---- arithmetic on gradients that are partly sharded (written here: see the module's text) ---------
def _sum_over_processes(value: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        value = value.clone()
        dist.all_reduce(value)
    return value


def squared_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The squared norm of all `tensors` together (float64): sharded ones summed over their shards on
    every process, whole ones counted once."""
    parts = [t for t in tensors if is_sharded(t)]
    sharded = sum((local(t).double().pow(2).sum() for t in parts), torch.zeros((), dtype=torch.float64))
    whole = sum(
        (t.double().pow(2).sum() for t in tensors if not is_sharded(t)), torch.zeros((), dtype=torch.float64)
    )
    return _sum_over_processes(sharded) + whole


def sharded_dot(u: torch.Tensor, v: torch.Tensor) -> float:
    """u . v of two vectors each process holds one part of (its shards, concatenated)."""
    return float(_sum_over_processes((u.double() * v.double()).sum()))


def clip_grad_norm_(parameters: list[nn.Parameter], max_norm: float) -> float:
    """torch's clip_grad_norm_ for gradients partly sharded (DTensor) and partly whole: the global norm
    (see `squared_norm`), and every gradient scaled by max_norm / norm when above it. Returns the norm
    before clipping (inf/NaN included, for the trainer's divergence check)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    norm = float(squared_norm(grads).sqrt())
    coefficient = max_norm / (norm + 1e-6)
    if coefficient < 1.0:
        for grad in grads:
            grad.mul_(coefficient)  # a DTensor scales its own shard
    return norm


def all_finite(tensors: list[torch.Tensor]) -> bool:
    """Whether every element of `tensors` is finite, on every process (one all-reduce)."""
    bad = sum((int((~torch.isfinite(local(t).detach())).any()) for t in tensors), 0)
    return float(_sum_over_processes(torch.tensor(float(bad), dtype=torch.float64))) == 0


# ---- whole weights from the shards: best/ and checkpoints ------------------------------------------
def _full_options() -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # Gathered tensor by tensor onto the main process's CPU memory (the others get an empty dict), so
    # no device ever holds the whole model.
    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's state dict on the main process ({} on the others). Every process must call it."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_full_options())


def save_training_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, directory: Path, *, main: bool
) -> None:
    """Every process takes part in the gathering; the main one writes the whole model and optimiser."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    weights = full_model_state(model)
    moments = get_optimizer_state_dict(model, optimizer, options=_full_options())
    if main:
        torch.save(weights, directory / MODEL_FILE)
        torch.save(moments, directory / OPTIMIZER_FILE)


def load_training_state(model: nn.Module, optimizer: torch.optim.Optimizer, directory: Path) -> None:
    """Each process reads the whole state and keeps its own shards (same number of processes or not)."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True)
    weights = torch.load(directory / MODEL_FILE, map_location="cpu", weights_only=True)
    moments = torch.load(directory / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
    set_model_state_dict(model, weights, options=options)
    set_optimizer_state_dict(model, optimizer, moments, options=options)
