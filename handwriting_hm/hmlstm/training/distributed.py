"""Several processes under `torchrun`: where this one sits, and how the batches are shared among them so that
every rank sees its own share and all ranks take the same number of steps (DDP waits for every rank)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Iterator


@dataclass(frozen=True)
class Distributed:
    """Where this process sits in a `torchrun` launch (rank 0 of 1 otherwise)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def distributed_from_env() -> Distributed:
    """Read the variables `torchrun` sets; absent variables mean a single process."""
    return Distributed(
        rank=int(os.environ.get("RANK", 0)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
    )


def shard_batches(batches: Iterable[Any], rank: int, world_size: int) -> Iterator[Any]:
    """Deal batches round-robin to ranks, dropping a last incomplete round.

    Every rank gets the same number of batches, which DDP needs: a rank that runs out early
    would leave the others waiting in the gradient all-reduce forever.
    """
    round_of_batches: list[Any] = []
    for batch in batches:
        round_of_batches.append(batch)
        if len(round_of_batches) == world_size:
            yield round_of_batches[rank]
            round_of_batches = []


def share_lines(groups: Iterable[list[int]], rank: int, world_size: int) -> Iterator[tuple[list[int], list[int]]]:
    """(this rank's share, the whole group) of each group of lines, for training lines in chunks.

    A line's chunks must follow each other in one process (the carried state runs through them),
    so the processes share each group's lines instead of being dealt whole groups; a group with
    fewer lines than processes is left out, as some process would have none of it.
    """
    for group in groups:
        if len(group) >= world_size:
            yield group[rank::world_size], group
