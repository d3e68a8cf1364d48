"""A tiny random T5 (encoder-decoder) saved as a local model folder, for tests of seq2seq backbones.

Import it as `from tiny_t5 import tiny_t5_folder` (tests/ is on sys.path: its conftest.py is there).
Built from a config like the shipped tiny-* models, with minilm's BERT tokenizer (its [SEP] ends targets).
"""

from __future__ import annotations

from pathlib import Path

_BERT_PAD_ID, _BERT_SEP_ID = 0, 102


def tiny_t5_folder(root: Path, seed: int = 0) -> str:
    """Write (once) a 2+2-layer T5 of width 32 under `root` and return the folder, loadable as `model:`."""
    folder = Path(root) / "tiny-t5"
    if (folder / "config.json").is_file():
        return str(folder)
    import torch
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    from mtpeft.models.registry import minilm_folder

    config = T5Config(
        vocab_size=30522,
        d_model=32,
        d_kv=16,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=2,
        pad_token_id=_BERT_PAD_ID,
        eos_token_id=_BERT_SEP_ID,
        decoder_start_token_id=_BERT_PAD_ID,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        T5ForConditionalGeneration(config).save_pretrained(str(folder))
    AutoTokenizer.from_pretrained(minilm_folder()).save_pretrained(str(folder))
    return str(folder)
