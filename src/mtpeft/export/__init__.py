"""`mtpeft export`: a trained run as ONE ONNX graph plus what answering without PyTorch needs.

    EXPORT/
      model.onnx          inputs input_ids, attention_mask [batch, sequence] (int64, dynamic axes);
                          outputs `pooled` [batch, hidden] (read by the pair heads and OOD scores),
                          `probs.<task>` per one-snippet classification task (calibrated probabilities),
                          `embedding.<task>` per retrieval task (unit vectors)
      pair_heads.npz      each pair task's MLP weights and temperature (`pair.<task>.*`): applied in numpy
                          to two pooled vectors (mtpeft.export.runtime.pair_probabilities)
      tokenizer/          tokenizer.json (the `tokenizers` library's; padding and truncation off) and the
                          transformers files beside it
      calibration/        the run's calibration folder, copied as is (temperatures, validation outputs for
                          --precision, OOD statistics), where the run has one
      export.json         what the folder holds: tasks, labels, limits, pooling, the source run and its
                          best/ checksum, the graph's precision, and the agreement measured at export
      MANIFEST.json       every file's size and sha256 (mtpeft.manifest), written last

The folder is written beside its target under a temporary name, its manifest last, then renamed into
place (as a run's best/ is): it is whole or absent. Reading it checks every file against the manifest
first, so a missing or changed file is one clear error, not a failure inside onnxruntime.

This package's modules import torch only in `build`, `graph` and `agreement` (the `mtpeft export` side);
`folder` and `runtime` (the deployment side) need numpy, onnxruntime and tokenizers only.
"""

from mtpeft.export.folder import EXPORT_FILE, GRAPH_FILE, is_export

__all__ = ["EXPORT_FILE", "GRAPH_FILE", "is_export"]
