"""Training tools (post 4, "Making Keras cooler"): seeding, weight EMA (``ema``), capture of intermediate tensors
(``capture``), process-safe data (``data``), atomic checkpoints (``checkpoint``), and the runtime every trainer uses
for resume, the NaN guard and DDP (``runtime``, ``distributed``)."""
