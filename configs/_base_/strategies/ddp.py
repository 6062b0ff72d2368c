# Plain DistributedDataParallel with MMEngine's Runner: every GPU holds the whole model, its
# gradients and its optimizer states (16-18 bytes per parameter). The default; this piece
# switches a config that selected another strategy back to it.
# Fits InternViT-300M and frozen-backbone (linear probing / head tuning) 6B recipes, not
# 6B full tuning (see docs/distributed.md).
runner_type = 'Runner'
strategy = None
