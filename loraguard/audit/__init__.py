"""Offline checkpoint auditing: read LoRA adapters, safetensors files and merged models without trusting them.

Nothing here imports peft or model code, and nothing writes to what it audits. torch is used only as a tensor
library, inside the functions that look at tensor values. Rules and their IDs live in `loraguard.audit.rules`.
"""
