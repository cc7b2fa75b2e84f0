"""Pieces that generation, training and scale-out all use: the roles, title normalisation, partitions, and the
base-model fingerprint of an adapter. Plain Python; nothing here imports from the stages above it."""
