"""Per-role LoRA fine-tuning of the two simulators, on the same prompts the generator serves.

    interplay summarize --data pearl/train.json --config configs/embedded.yaml --output pearl-summarized.parquet
    interplay train --role user --data out/train-corpus --output out/adapters/user-simulator
    interplay train --role recommender --data pearl/train.json --output out/adapters/recommender
    interplay merge --adapter out/adapters/recommender --output out/merged/recommender

Modules: data.py reads dialogue corpora (this project's Parquet corpora, PEARL-format JSON, plain JSONL/Parquet of
messages) and counts what it skips; examples.py renders one role's view of a dialogue with the generator's own
prompt code and chat template and masks the loss to that role's turns; trainer.py is the only module that imports
the training stack (torch, transformers, peft); merge.py writes full weights; summarize.py fills in preference
summaries and target attributes through the generator's engine layer. The subcommand modules (cli.py, merge.py,
summarize.py) import nothing heavy at import time, so `interplay --help` stays fast.
"""
