"""`interplay report`: quality figures for generated corpora. text.py (distinct-n, self-BLEU), task.py (Recall,
leakage, match score), decisions.py (offers, acceptances, Wilson intervals), teacher.py (teacher quality) and
duplicates.py (exact and near-duplicate dialogues) measure, metrics.py accumulates a corpus, summary.py gives the
headline figures, render.py and plots.py present them; docs/report.md defines every figure."""
