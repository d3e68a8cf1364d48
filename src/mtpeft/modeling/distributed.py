"""Several processes (`torchrun`, `accelerate launch`): who takes which share, and the collectives.

The global batch is defined once, by the config: a task's `batch_size` (or `batch_tokens`) is the
batch of the whole step, whatever the number of processes P. Every process draws the same global batch
(the batchers are seeded alike) and takes its own share of it (`Shard.take`), so P processes
do 1/P of the work each and a run's result does not depend on P. The pieces that need every process's
share (the code-search loss's in-batch negatives, token-count normalisations, loss values for the loss
weightings) use the collectives below.

torch.distributed has the collectives; what it does not have is the bookkeeping of uneven shares (a
batch of 5 on 2 processes) and the straight-through global loss (`global_loss`), written here.
With one process every function is the identity and nothing is communicated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@dataclass(frozen=True)
class Shard:
    """This process's place among `size` processes."""

    rank: int = 0
    size: int = 1

    @classmethod
    def current(cls) -> Shard:
        if not active():
            return cls()
        return cls(dist.get_rank(), dist.get_world_size())

    @property
    def several(self) -> bool:
        return self.size > 1

    def sizes(self, total: int) -> list[int]:
        """How many of `total` items each process takes: as even as possible, the first ones one more."""
        base, extra = divmod(total, self.size)
        return [base + (1 if r < extra else 0) for r in range(self.size)]

    def take(self, items: list[Any]) -> list[Any]:
        """This process's share of a global batch: every P-th item from its rank on. A length-grouped
        batch comes longest first, so dealing it out round the processes gives each a similar mix of
        lengths (similar work and padding) where contiguous slices would give the first process the
        longest examples and keep the others waiting at every all-reduce."""
        return items[self.rank :: self.size]


# Keys a sharded batch carries (trainer -> heads and token losses).
SHARD_SIZES = "shard_sizes"  # rows of every process, in rank order
SHARD_RANK = "shard_rank"
LOSS_SHARE = "loss_share"  # this process's share of the global loss (see global_loss)


def gather_rows(tensor: torch.Tensor, sizes: list[int], rank: int) -> torch.Tensor:
    """Every process's rows of `tensor`, in rank order, with the gradient flowing back to each owner.

    torch.distributed.nn's all_gather carries the gradient (the backward sums each slice's gradient on
    its owner, as sentence-transformers' `gather_across_devices` and CLIP's training do) but needs equal
    shapes, so uneven shares are padded to the largest and cut back after.
    """
    from torch.distributed.nn.functional import all_gather

    widest = max(sizes)
    pad = widest - tensor.shape[0]
    padded = torch.nn.functional.pad(tensor, (0, 0) * (tensor.dim() - 1) + (0, pad)) if pad else tensor
    parts = all_gather(padded.contiguous())
    return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)])


def global_loss(loss: torch.Tensor, share: float, processes: int) -> torch.Tensor:
    """The step's global loss value, with the gradient of this process's part of it.

    `share` is this process's share of the global loss: its examples / the batch's for a mean over
    examples (so the global loss is sum_p share_p * loss_p), 1 for a loss already normalised by global
    counts (token losses). The value returned is the global loss on every process (so loss weightings,
    logs and the divergence check see one number everywhere), and its gradient is P * share * d loss:
    DDP's all-reduce averages over the P processes, which gives exactly the gradient of the global loss,
    also through a weighting that is not linear in the loss (FAMO's log, uncertainty's exp).
    """
    if processes <= 1:
        return loss
    value = (loss.detach() * share).reshape(1).to(torch.float64)
    dist.all_reduce(value)
    scaled = loss * (share * processes)
    return scaled - scaled.detach() + value.to(loss.dtype).reshape(loss.shape)


def all_reduce_sum(values: list[float]) -> list[float]:
    """Element-wise sums over the processes (counts, loss values); the values themselves with one."""
    if not active():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=_device())
    dist.all_reduce(tensor)
    return tensor.cpu().tolist()


def all_reduce_mean_(tensor: torch.Tensor) -> torch.Tensor:
    """In place: the mean over the processes (DDP's gradient average, for a gradient read apart)."""
    if active():
        dist.all_reduce(tensor)
        tensor /= dist.get_world_size()
    return tensor


def gather_objects(value: Any) -> list[Any]:
    """Every process's `value` (picklable), in rank order, on every process."""
    if not active():
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast_object(value: Any) -> Any:
    """The main process's `value`, on every process."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if active():
        dist.barrier()


def cpu_only() -> bool:
    """No GPU here: accelerate must be told (`cpu=True`), or it makes each launched process a lone
    one (DistributedType.NO) instead of joining them with gloo."""
    return not torch.cuda.is_available()


def _device() -> torch.device:
    # NCCL collectives need tensors on this process's GPU; gloo takes CPU tensors.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
