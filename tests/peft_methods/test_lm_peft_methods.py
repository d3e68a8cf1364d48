"""Every fine-tuning method on backbones WITH a language-model head: a decoder and an encoder-decoder.

The same one-table style as test_peft_methods.py: each method trains the LM's logits, saves, reloads
onto a fresh backbone with identical logits, and generates (greedy and beam) through its peft wrapper
with the method in effect; prefix tuning, which generate() drops, is refused for generation tasks.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mtpeft.errors import ConfigError
from mtpeft.models import load_backbone
from mtpeft.peft_methods import AdaptedBackbone, apply_method, get_method, load_method
from tiny_t5 import tiny_t5_folder

METHODS = ["lora", "dora", "ia3", "prefix", "prompt", "adapter", "parallel-adapter", "full"]
MODELS = ["tiny-llama", "tiny-t5"]
CASES = [(method, model) for method in METHODS for model in MODELS]


@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory) -> str:
    return tiny_t5_folder(tmp_path_factory.mktemp("models"))


def _load(model: str, t5_folder: str, seed: int = 0):
    return load_backbone(t5_folder if model == "tiny-t5" else model, lm_head=True, seed=seed)


def _inputs(backbone) -> dict[str, torch.Tensor]:
    # Left padding for decoders, as mtpeft generates: every row continues from the last column.
    backbone.tokenizer.padding_side = "left" if backbone.info.lm_head == "causal" else "right"
    encoded = backbone.tokenizer(["def add(a, b):", "x = 1"], padding=True, return_tensors="pt")
    inputs = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
    if backbone.info.lm_head == "seq2seq":
        inputs["decoder_input_ids"] = torch.tensor([[0, 7592, 2088], [0, 2088, 7592]])
    return inputs


def _logits(adapted: AdaptedBackbone, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    adapted.eval()
    with torch.no_grad():
        return adapted.lm_forward(**inputs).logits[:, -2:]


def _train(adapted: AdaptedBackbone, inputs: dict[str, torch.Tensor]) -> None:
    adapted.train()
    optimiser = torch.optim.AdamW([p for p in adapted.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        logits = adapted.lm_forward(**inputs).logits[:, -1]
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor([2000, 3000]))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()


@pytest.mark.parametrize(("method", "model"), CASES, ids=[f"{m}-{b}" for m, b in CASES])
def test_method_trains_the_lm_saves_reloads_and_generates(method, model, t5_folder, tmp_path: Path):
    backbone = _load(model, t5_folder, seed=3)
    inputs = _inputs(backbone)
    adapted = apply_method(backbone, method)
    before = _logits(adapted, inputs)
    _train(adapted, inputs)
    after = _logits(adapted, inputs)
    assert not torch.allclose(before, after), "training did not change the LM's logits"
    adapted.save(tmp_path)
    reloaded = load_method(_load(model, t5_folder, seed=3), tmp_path)
    torch.testing.assert_close(_logits(reloaded, inputs), after)
    if getattr(get_method(method), "generation_problem", None) is None:
        _generates_what_the_forward_predicts(reloaded, inputs)


def _generates_what_the_forward_predicts(adapted: AdaptedBackbone, inputs: dict[str, torch.Tensor]) -> None:
    """generate()'s first-step scores are the forward's next-token logits: the method is in effect there."""
    prompt = {k: v for k, v in inputs.items() if not k.startswith("decoder")}
    settings = {"do_sample": False, "pad_token_id": 0}
    with torch.no_grad():
        first = adapted.generate(
            **prompt, max_new_tokens=1, output_scores=True, return_dict_in_generate=True, **settings
        ).scores[0]
        start = (
            {"decoder_input_ids": inputs["decoder_input_ids"][:, :1]} if "decoder_input_ids" in inputs else {}
        )
        expected = adapted.lm_forward(**prompt, **start).logits[:, -1]
        torch.testing.assert_close(first, expected, atol=1e-4, rtol=1e-4)
        beams = adapted.generate(**prompt, max_new_tokens=3, num_beams=2, **settings)
    assert beams.shape[0] == 2


def test_a_method_that_cannot_generate_is_refused_for_generation_tasks_only():
    from mtpeft.config import TrainConfig
    from mtpeft.modeling.build import build_model
    from mtpeft.tasks import get_task

    tasks = [{"task": "vulnerability", "formulation": "instruct"}, {"task": "repair"}]
    config = TrainConfig(model="tiny-llama", method="prefix", tasks=tasks)
    with pytest.raises(ConfigError, match="field 'method'.*cannot generate the text of task 'repair'"):
        build_model(config, {t["task"]: get_task(t["task"]) for t in tasks})
    scoring_only = config.model_copy(update={"tasks": config.tasks[:1]})
    assert build_model(scoring_only, {"vulnerability": get_task("vulnerability")}).model.lm_tasks
