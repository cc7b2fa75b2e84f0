"""`interplay report`: quality figures for generated corpora (metrics.py is pure Python; plots.py draws them)."""
