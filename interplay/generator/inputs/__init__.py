"""What a run starts from: seeds (streamed, validated), the item catalog and its grounding of free text to item ids,
and the MovieLens builder of the embedded default."""
