"""Prompting baselines: general LLMs asked directly, on the same tasks, data, metrics and store as
fine-tuned runs (`mtpeft prompt`).

Modules, one concern each: config.py (what a prompting run is), templates.py (the question per task
kind), truncation.py (code cut to fit the context), parsing.py (a generated answer read as a label),
fewshot.py (BM25-nearest train examples as prior turns), retrieval.py (candidate pools and ranks for
code search), answers.py (the resumable answer log), scoring.py (answers -> metrics, intervals, counts),
runner.py (the orchestration and the store), backends/ (where the answers come from).
Nothing here imports torch at module import; the local backend does when it is made.
"""
