"""What the fine-tuning methods are called and what each does, without importing torch or peft.

`mtpeft methods` and config checks need only names and descriptions; importing the methods themselves
pulls in peft, transformers and torch (seconds). Each method object takes its description from here,
and a test keeps this table and the registry in `mtpeft.peft_methods` equal.
"""

from __future__ import annotations

METHOD_DESCRIPTIONS: dict[str, str] = {
    "lora": "LoRA: trainable low-rank updates on the attention projections (peft)",
    "dora": "DoRA: LoRA on the direction plus a trainable magnitude per output (peft, use_dora)",
    "ia3": "(IA)^3: trainable scaling vectors on keys, values and FFN activations (peft)",
    "prefix": "prefix tuning: trainable key/value vectors prepended in every attention layer (peft)",
    "prompt": "prompt tuning: trainable input embeddings prepended to every sequence (peft)",
    "adapter": "bottleneck adapters after attention and FFN outputs (Houlsby; placement=pfeiffer: FFN only)",
    "parallel-adapter": "bottleneck adapter in parallel with each FFN block, scaled (He et al. 2022)",
    "full": "full fine-tuning: every backbone weight is trained and saved",
}
