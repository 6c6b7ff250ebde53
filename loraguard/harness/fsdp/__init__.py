"""PyTorch FSDP machinery: sharding a model with FSDP2 or FSDP1, gathering its full state, a merged export."""
