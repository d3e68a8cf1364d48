"""The model side shared by training, evaluation and inference: inputs (tokenise, collate), the
multi-task model (encode once, then heads), and building, saving and loading it."""
