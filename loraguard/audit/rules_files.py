"""The audit rules about the files themselves: input (LG0xx), safetensors structure (LG1xx), pickles (LG4xx)."""

from __future__ import annotations

from loraguard.audit.rule_spec import Rule

#: The path cannot be audited (LG0xx), or its safetensors structure is broken (LG1xx).
INPUT_RULES = [
    # input: the file or directory cannot be audited
    Rule(
        "LG001",
        "unreadable-input",
        "error",
        "The path cannot be read (missing, permission denied, symlink loop, I/O error).",
        True,
        detail=(
            "The path is missing, unreadable (permissions, I/O error) or a symlink loop or dangling symlink. Fix "
            "the path or permissions."
        ),
    ),
    Rule(
        "LG002",
        "not-a-checkpoint",
        "error",
        "The path holds no adapter, safetensors, index or pickle file the audit understands.",
        True,
        detail=(
            "No adapter config, adapter subfolder, safetensors, index or pickle file; or an adapter directory "
            "without weights. Point the audit at an adapter or model directory."
        ),
    ),
    Rule(
        "LG003",
        "invalid-json",
        "error",
        "A JSON file (adapter config, shard index) is not valid UTF-8 JSON or not an object.",
        True,
        detail="`adapter_config.json` or a shard index is not UTF-8 JSON, or not an object. Re-save it.",
    ),
    Rule(
        "LG004",
        "missing-shard",
        "error",
        "A shard index names a file that is not there, or keys that its shard does not hold.",
        True,
        detail=(
            "The index names a shard that is missing or outside its folder, or the index and a shard disagree on "
            "the keys. Re-save the model."
        ),
    ),
    Rule(
        "LG005",
        "not-a-regular-file",
        "error",
        "A file a loader would read is a FIFO, device or socket, or a symlink to one: it is never opened.",
        True,
        detail="A FIFO, device or socket (or a symlink to one) under a name a loader reads (weights, pickle, config, "
        "index). Opening it could block or read without end (`/dev/zero`), so the audit never does. Replace it with "
        "the real file.",
    ),
    Rule(
        "LG006",
        "walk-limit",
        "error",
        "The directory tree is deeper or holds more files than the audit walks; the rest was not audited.",
        True,
        detail="The walk stops below 32 directory levels or after 100,000 entries, so a hostile tree cannot keep "
        "it busy forever. Audit the subfolders that hold checkpoints one by one.",
    ),
    # safetensors structure
    Rule(
        "LG101",
        "header-length",
        "error",
        "The 8-byte header length runs past the end of the file or exceeds the 100 MB cap.",
        True,
        detail="The header length runs past the file or the cap: truncated, or not safetensors.",
    ),
    Rule(
        "LG102",
        "header-json",
        "error",
        "The header is not a UTF-8 JSON object of well-formed tensor entries (dtype, shape, data_offsets).",
        True,
        detail=(
            "The header is not UTF-8, not JSON, not an object, names a tensor twice, or has a malformed entry or "
            "`__metadata__`."
        ),
    ),
    Rule(
        "LG103",
        "unknown-dtype",
        "error",
        "A tensor's dtype is not a safetensors dtype.",
        True,
        detail="A dtype that is not a safetensors dtype.",
    ),
    Rule(
        "LG104",
        "offsets-overlap",
        "error",
        "Two tensors' byte ranges overlap.",
        True,
        detail="Two tensors share bytes.",
    ),
    Rule(
        "LG105",
        "offsets-gap",
        "error",
        "Bytes between or after tensors belong to no tensor.",
        True,
        detail="Bytes between or after the tensors belong to none of them.",
    ),
    Rule(
        "LG106",
        "offsets-past-end",
        "error",
        "A tensor's byte range runs past the end of the file.",
        True,
        detail="A tensor runs past the end of the file: the file is truncated.",
    ),
    Rule(
        "LG107",
        "shape-span-mismatch",
        "error",
        "shape x dtype size differs from the tensor's byte span.",
        True,
        detail="shape x dtype size is not the tensor's byte span.",
    ),
]

#: What a pickle would import or run when loaded (LG4xx).
PICKLE_RULES = [
    # pickle
    Rule(
        "LG401",
        "pickle-imports-code",
        "error",
        "A pickle imports a callable outside the torch tensor set: loading it can run code.",
        detail="Imports anything else (`os.system`, `builtins.eval`...): loading would call it. Never loaded.",
    ),
    Rule(
        "LG402",
        "pickle-not-audited",
        "warning",
        "Pickle weights were scanned, not loaded; pass --allow-pickle for a trusted file.",
        detail=(
            "Only tensor imports; tensors not audited. Use `--allow-pickle` for a file you trust, or convert to "
            "safetensors."
        ),
    ),
    Rule(
        "LG403",
        "pickle-unreadable",
        "error",
        "A pickle cannot be parsed, or torch.load(weights_only=True) refuses it.",
        True,
        detail="Not a parseable pickle or torch archive, or `torch.load(weights_only=True)` refused it.",
    ),
    Rule(
        "LG404",
        "archive-member-unreadable",
        "error",
        "A zip member is encrypted, uses an unknown compression method, or is damaged: it cannot be scanned.",
        True,
        detail="A `*.pkl` member of a zip archive is encrypted, compressed with a method other than stored, deflate, "
        "bzip2 or lzma, or damaged, so its pickle cannot be scanned. Never load the file.",
    ),
    Rule(
        "LG405",
        "size-cap",
        "error",
        "A compressed member inflates past the audit's cap, or a file exceeds what the audit reads.",
        True,
        detail="A zip member inflates past 64 MiB (or 16x its compressed size, whichever is more), a JSON file is "
        "larger than 64 MiB, or an archive has too many members. The rest was not scanned (a decompression bomb "
        "costs nothing). Never load the file.",
    ),
    Rule(
        "LG406",
        "unscannable-content",
        "error",
        "A loader would run content the audit cannot scan (TorchScript code, an odd legacy tar record).",
        True,
        detail="A TorchScript archive (torch.load hands it to torch.jit.load, whose code is not audited) or a legacy "
        "tar archive whose members do not follow torch's layout or are links. Neither provably safe nor scannable: "
        "do not load it.",
    ),
]
