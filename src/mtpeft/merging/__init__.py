"""`mtpeft merge`: one run from several trained LoRA runs, at no training cost.

`settings` (torch-free) names peft's combination types and holds one merge's settings; `sources` reads
and checks the runs; `merge` builds the merged module with peft's `add_weighted_adapter`, keeps every
source run's heads, and writes, records and scores the merged run directory.
"""

from mtpeft.merging.settings import COMBINATIONS, MergeSettings

__all__ = ["COMBINATIONS", "MergeSettings"]
