"""Per-role LoRA fine-tuning of the two simulators, on the same prompts the generator serves.

    interplay summarize --data pearl/train.json --config configs/embedded.yaml --output pearl-summarized.parquet
    interplay train --role user --data out/train-corpus --output out/adapters/user-simulator
    interplay train --role recommender --data pearl/train.json --output out/adapters/recommender
    interplay merge --adapter out/adapters/recommender --output out/merged/recommender

Modules: config.py (the training config), records.py (the Dialogue type, load counters, shared checks), readers.py +
data.py + formats/ (this project's Parquet corpora, PEARL, ReDial, LLM-REDIAL, ShareGPT and plain JSONL/Parquet of
messages, read into one Dialogue type, bad records counted by reason; formats/to_*.py write a corpus as ReDial,
ShareGPT or PEARL for `interplay export`; docs/data.md), examples.py (one role's view of a dialogue rendered with
the generator's own prompt code and chat template, the loss masked to that role's turns), trainer.py (the training
stack: torch, transformers' Trainer, peft; merge.py and examples.py import transformers only inside functions),
curve.py (loss.json + loss.png), output_dir.py (the adapter output directory; the base model fingerprint an adapter
is checked against lives in interplay.common.adapters), merge.py (full weights), summarize.py + summary_output.py
(preference summaries and target attributes through the generator's engine layer, written in resumable parts). The
subcommand modules (cli.py for `train`, merge.py, summarize.py) import nothing heavy at import time, so `interplay
--help` stays fast.
"""
