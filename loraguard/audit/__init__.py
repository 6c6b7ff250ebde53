"""Offline checkpoint auditing: read LoRA adapters, safetensors files and merged models without trusting them.

Nothing here imports peft or model code, and nothing writes to what it audits. Auditing safetensors adapters
imports no torch (values are judged off their bits); torch is a tensor library for trusted pickles and merges
only. Rules and their IDs live in `loraguard.audit.rules`.
"""
