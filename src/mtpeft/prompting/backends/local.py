"""A local causal LM run with transformers and its chat template: generate, score and embed.

- Prompts are rendered with the tokenizer's chat template (a plain "role: text" one where the tokenizer
  has none, e.g. tiny-llama's BERT tokenizer) and tokenised without extra special tokens (the template
  holds them).
- Batches are length-grouped (similar lengths together, bounded in rows and padded tokens) and LEFT
  padded with explicit position ids, so every row ends at the same column: generation appends there, and
  scoring needs only the logits of the last few columns (`logits_to_keep`), never a vocabulary-sized
  row per prompt token.
- A prompt longer than the context (the runner cuts code first; only instructions longer than the
  whole context get here) keeps its first quarter and its end, and its Answer says truncated.
- score: the summed log-probability of each choice's tokens as the start of the assistant's reply, as
  lm-evaluation-harness scores multiple choice; one forward pass per prompt where every choice is one
  token (yes/no), one per prompt and choice otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from mtpeft.errors import ModelLoadError
from mtpeft.prompting.backends.base import Answer, Prompt

DEFAULT_CONTEXT = 2048  # tokens: most prompts fit well within it, and CPU cost grows with it
MAX_BATCH_TOKENS = 16384  # padded tokens per forward pass (bounds activation memory)
# For tokenizers without a chat template (a base model, tiny-llama's BERT tokenizer).
PLAIN_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def load_causal_lm(name: str, *, seed: int = 0) -> tuple[Any, Any]:
    """(model with its LM head, tokenizer) for a short name, a local folder or a hub id."""
    from transformers import AutoModelForCausalLM

    from mtpeft.models.loading import _load_tokenizer, _require_hub
    from mtpeft.models.registry import MODELS

    entry = MODELS.get(name)
    if entry is not None and entry.architecture != "decoder":
        raise ModelLoadError(
            f"model '{name}' is an encoder ({entry.description}); prompting needs a causal language "
            "model: a decoder such as smollm2-135m, a hub id or a local folder"
        )
    source = entry.loader() if entry is not None else name
    try:
        with _seeded(seed):
            if entry is not None and entry.random_init is not None:
                model = AutoModelForCausalLM.from_config(entry.random_init())
            elif entry is not None or Path(name).is_dir():
                model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
            else:
                model = _from_hub(name, _require_hub)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"'{name}' could not be loaded as a causal language model: {err}") from err
    return model.eval(), _prepare_tokenizer(_load_tokenizer(source), name)


def _from_hub(name: str, require_hub: Callable[[str], None]) -> Any:
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32, local_files_only=True)
    except (OSError, ValueError):
        require_hub(name)  # raises, saying what to do, when the hub cannot be reached
        return AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32)


def _prepare_tokenizer(tokenizer: Any, name: str) -> Any:
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError(f"the tokenizer of '{name}' has neither a pad nor an end-of-sequence token")
        tokenizer.pad_token = tokenizer.eos_token  # masked out everywhere it is used
    tokenizer.padding_side = "left"
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = PLAIN_CHAT_TEMPLATE
    return tokenizer


def length_batches(
    lengths: Sequence[int], batch_size: int, max_tokens: int = MAX_BATCH_TOKENS
) -> list[list[int]]:
    """Indices grouped longest first, at most `batch_size` rows and `max_tokens` padded tokens a batch."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        batch = batches[-1] if batches else None
        # Sorted longest first, so the batch's first row sets its padded width.
        if batch and len(batch) < batch_size and (len(batch) + 1) * lengths[batch[0]] <= max_tokens:
            batch.append(i)
        else:
            batches.append([i])
    return batches


class LocalBackend:
    """A ScoringBackend over a causal LM loaded here (CPU, or the GPU where there is one)."""

    def __init__(
        self,
        model: str,
        *,
        context_length: int | None = None,
        batch_size: int = 8,
        embed_max_tokens: int = 512,
        seed: int = 0,
        device: str | None = None,
    ) -> None:
        self.name = f"local:{model}"
        self.model, self.tokenizer = load_causal_lm(model, seed=seed)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device)
        limit = (
            getattr(self.model.config.get_text_config(), "max_position_embeddings", None) or DEFAULT_CONTEXT
        )
        self.context_length = min(context_length or DEFAULT_CONTEXT, limit)
        self.batch_size = batch_size
        self.embed_max_tokens = embed_max_tokens
        eos = self.tokenizer.eos_token_id
        self._stop = {eos} if eos is not None else set()

    # ---- tokens ------------------------------------------------------------------------------------
    def _render(self, prompt: Prompt) -> str:
        return render_chat(self.tokenizer, prompt)

    def _ids(self, prompt: Prompt) -> list[int]:
        return self.tokenizer(self._render(prompt), add_special_tokens=False)["input_ids"]

    def count_tokens(self, prompt: Prompt) -> int:
        return len(self._ids(prompt))

    def _fitted(self, prompt: Prompt, reserve: int) -> tuple[list[int], bool]:
        ids = self._ids(prompt)
        budget = max(self.context_length - reserve, 8)
        if len(ids) <= budget:
            return ids, False
        head = budget // 4  # the system message and task instructions open the prompt
        return ids[:head] + ids[len(ids) - (budget - head) :], True

    def _left_padded(self, rows: list[list[int]]) -> dict[str, torch.Tensor]:
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=self.device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: positions start at each row's start
        return {"input_ids": ids, "attention_mask": mask, "position_ids": positions}

    # ---- generate ----------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, prompts: Sequence[Prompt], *, max_new_tokens: int) -> list[Answer]:
        fitted = [self._fitted(p, max_new_tokens) for p in prompts]
        answers: list[Answer | None] = [None] * len(prompts)
        for batch in length_batches([len(ids) for ids, _ in fitted], self.batch_size):
            started = time.perf_counter()
            outputs = self._generate_batch([fitted[i][0] for i in batch], max_new_tokens)
            share = (time.perf_counter() - started) / len(batch)
            for i, (text, produced) in zip(batch, outputs, strict=True):
                ids, cut = fitted[i]
                answers[i] = Answer(text, len(ids), produced, share, truncated=cut)
        return answers  # type: ignore[return-value]

    def _generate_batch(self, rows: list[list[int]], max_new_tokens: int) -> list[tuple[str, int]]:
        from transformers import GenerationConfig

        inputs = self._left_padded(rows)
        inputs.pop("position_ids")  # generate derives them from the mask, step by step
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=sorted(self._stop) or None,
        )
        out = self.model.generate(**inputs, generation_config=config)
        results = []
        for row in out[:, inputs["input_ids"].shape[1] :].tolist():
            produced = next((k + 1 for k, token in enumerate(row) if token in self._stop), len(row))
            results.append((self.tokenizer.decode(row[:produced], skip_special_tokens=True), produced))
        return results

    # ---- score -------------------------------------------------------------------------------------
    @torch.inference_mode()
    def score(self, prompts: Sequence[Prompt], choices: Sequence[str]) -> list[list[float]]:
        choice_ids = [self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in choices]
        if not all(choice_ids):
            raise ValueError(f"every choice must be at least one token; got {list(choices)}")
        fitted = [self._fitted(p, max(len(c) for c in choice_ids))[0] for p in prompts]
        if all(len(c) == 1 for c in choice_ids):
            return self._score_next_token(fitted, [c[0] for c in choice_ids])
        return self._score_by_choice(fitted, choice_ids)

    def _score_next_token(self, prefixes: list[list[int]], tokens: list[int]) -> list[list[float]]:
        scores: list[list[float]] = [[] for _ in prefixes]
        for batch in length_batches([len(p) for p in prefixes], self.batch_size):
            logits = self._last_logits([prefixes[i] for i in batch], keep=1)[:, -1]
            chosen = torch.log_softmax(logits.float(), dim=-1)[:, tokens]
            for i, row in zip(batch, chosen.tolist(), strict=True):
                scores[i] = row
        return scores

    def _score_by_choice(self, prefixes: list[list[int]], choice_ids: list[list[int]]) -> list[list[float]]:
        per_choice = [self._score_continuations(prefixes, c) for c in choice_ids]
        return [list(row) for row in zip(*per_choice, strict=True)]

    def _score_continuations(self, prefixes: list[list[int]], continuation: list[int]) -> list[float]:
        rows = [p + continuation for p in prefixes]
        n = len(continuation)
        target = torch.tensor(continuation, device=self.device)
        sums: list[float] = [0.0] * len(rows)
        for batch in length_batches([len(r) for r in rows], self.batch_size):
            # The last n + 1 columns: column -(n+1)+t predicts continuation token t.
            logits = self._last_logits([rows[i] for i in batch], keep=n + 1)[:, :n]
            logp = torch.log_softmax(logits.float(), dim=-1)
            picked = logp.gather(-1, target.expand(len(batch), n).unsqueeze(-1)).squeeze(-1)
            for i, value in zip(batch, picked.sum(-1).tolist(), strict=True):
                sums[i] = value
        return sums

    def _last_logits(self, rows: list[list[int]], keep: int) -> torch.Tensor:
        inputs = self._left_padded(rows)
        try:
            return self.model(**inputs, logits_to_keep=keep).logits
        except TypeError:  # a model class without logits_to_keep: compute all columns, keep the last
            return self.model(**inputs).logits[:, -keep:]

    # ---- embed -------------------------------------------------------------------------------------
    @torch.inference_mode()
    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        encoded = self.tokenizer(
            list(texts), add_special_tokens=False, truncation=True, max_length=self.embed_max_tokens
        )["input_ids"]
        rows = [ids or [self.tokenizer.pad_token_id] for ids in encoded]  # an empty text still gets a row
        vectors: list[list[float]] = [[] for _ in rows]
        for batch in length_batches([len(r) for r in rows], self.batch_size):
            inputs = self._left_padded([rows[i] for i in batch])
            hidden = self.model.base_model(**inputs).last_hidden_state.float()
            mask = inputs["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            for i, row in zip(batch, pooled.tolist(), strict=True):
                vectors[i] = row
        return vectors


def render_chat(tokenizer: Any, prompt: Prompt) -> str:
    """The prompt through the tokenizer's chat template, ready for the assistant's reply (also used by
    fine-tuning in instruct form, so a tuned model and its zero-shot baseline read the same prompt)."""
    from jinja2.exceptions import TemplateError

    template = getattr(tokenizer, "chat_template", None) or PLAIN_CHAT_TEMPLATE
    try:
        return tokenizer.apply_chat_template(
            prompt, tokenize=False, add_generation_prompt=True, chat_template=template
        )
    except TemplateError:  # e.g. Gemma's template refuses a system turn: fold it into the user's
        if not prompt or prompt[0].get("role") != "system":
            raise
        merged = _merge_system(prompt)
        return tokenizer.apply_chat_template(
            merged, tokenize=False, add_generation_prompt=True, chat_template=template
        )


def _merge_system(prompt: Prompt) -> Prompt:
    """The system message folded into the first user turn, for templates without a system role."""
    if not prompt or prompt[0]["role"] != "system":
        return prompt
    system, rest = prompt[0]["content"], list(prompt[1:])
    if rest and rest[0]["role"] == "user":
        rest[0] = {"role": "user", "content": f"{system}\n\n{rest[0]['content']}"}
        return rest
    return [{"role": "user", "content": system}, *rest]
