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
    "mtl-lora": "MTL-LoRA (Yang et al. 2025): shared A, a task's own r x r transform, a task-weighted mix "
    "of k shared B (one forward per task)",
    "full": "full fine-tuning: every backbone weight is trained and saved",
}

# `loss_weighting:` in a train config; options go in `loss_weighting_options:`. The registry is
# mtpeft.training.loss_weighting.LOSS_WEIGHTINGS (a test keeps the two equal).
LOSS_WEIGHTING_DESCRIPTIONS: dict[str, str] = {
    "equal": "the mean of the task losses",
    "learned": "losses weighted by a softmax over task logits trained with the heads (the study's first)",
    "uncertainty": "Kendall et al. 2018: exp(-s_k) * L_k + s_k with learned log-variances s_k",
    "normalized": "the study's default: weights proportional to each task's mean loss over the last epoch "
    "(uniform in the first); option every: steps between updates",
    "gradnorm": "Chen et al. 2018: learned weights equalising task gradient norms on the shared module, "
    "scaled by relative inverse training rate^alpha; options alpha (1.5), lr (0.025)",
    "famo": "Liu et al. 2023: softmax weights moved to the tasks whose log loss fell least in the step "
    "(one extra forward per task); options lr (0.025), gamma (0.001)",
}

# When to trust each signal of which tasks should share a module (`mtpeft group --help` and the report's
# "Cheap grouping signals vs measured transfer" section print it).
GROUPING_SIGNALS_TRUST = (
    "When to trust each signal (pending measurement: examples/studies/grouping.yaml measures all three on"
    " five tasks of ../shared/data; its numbers will be filled in here). Measured pair transfer is the "
    "reference: it is what grouping is for, but it costs one run per pair. Lookahead affinity (TAG, "
    "`affinity: {every: K}`) asks directly whether a step for one task lowers another task's loss, at the"
    " cost of N + N^2 forward passes every K steps of one joint run; gradient cosine "
    "(`grad_conflict_every: K`) costs almost nothing but only sees the direction of the gradients, not "
    "their effect on the loss (on the claims study it correlated +0.54 with transfer over 6 pairs: "
    "undecided). Both come from one joint run and one seed, and affinities are small numbers (a lookahead"
    " moves the weights by one learning-rate step). Trust a cheap signal's grouping once a study that "
    "measured both shows its rank correlation with transfer clearly positive (the bootstrap interval "
    "above 0) and its grouping reaching about the measured grouping's score; until then, use it to choose"
    " which few groups to run, not as the answer."
)
