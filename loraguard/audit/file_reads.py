"""Reading the files an audit looks at (safetensors headers, JSON objects, shard indexes); a bad one is Unusable."""

from __future__ import annotations

import json
import os

from loraguard.audit.result import AuditResult
from loraguard.audit.rules import Finding
from loraguard.audit.safe_io import MAX_JSON_BYTES, Unusable, read_capped, regular_size
from loraguard.audit.safetensors_header import Header, HeaderError, read_header


def header_of(path: str, result: AuditResult) -> Header:
    """The validated safetensors header of `path`, or Unusable with the rule it breaks."""
    regular_size(path)
    result.files.append(path)
    try:
        return read_header(path)
    except HeaderError as err:
        raise Unusable(Finding(err.rule, path, str(err).removeprefix(f"{path}: "))) from None
    except OSError as err:
        raise Unusable(Finding("LG001", path, f"cannot read: {err.strerror or err}")) from None


def read_json_object(path: str, result: AuditResult) -> dict:
    """A JSON object from `path`, or Unusable (LG001/LG003/LG005/LG405) naming what is wrong with it."""
    regular_size(path)
    result.files.append(path)
    try:
        data = json.loads(read_capped(path, MAX_JSON_BYTES, "LG405").decode("utf-8"))
    except OSError as err:
        raise Unusable(Finding("LG001", path, f"cannot read: {err.strerror or err}")) from None
    except UnicodeDecodeError as err:
        raise Unusable(Finding("LG003", path, f"not UTF-8 (byte {err.start})")) from None
    except (json.JSONDecodeError, RecursionError) as err:
        raise Unusable(Finding("LG003", path, f"not valid JSON ({str(err)[:120]})")) from None
    except ValueError as err:  # an integer past Python's int-to-str digit limit (thousands of digits)
        raise Unusable(Finding("LG003", path, f"a number in it cannot be read ({str(err)[:100]})")) from None
    if not isinstance(data, dict):
        raise Unusable(Finding("LG003", path, f"JSON {type(data).__name__}, expected an object"))
    return data


def index_headers(index_path: str, result: AuditResult) -> list[Header]:
    """A sharded model's headers: the index must name existing shards in its own folder, and agree with them."""
    weight_map = read_json_object(index_path, result).get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise Unusable(
            Finding("LG003", index_path, "'weight_map' must be an object mapping tensor names to shard files")
        )
    folder = os.path.dirname(index_path) or "."
    headers: list[Header] = []
    for shard in sorted(set(weight_map.values())):
        if os.path.basename(shard) != shard or shard in ("", ".", ".."):
            raise Unusable(Finding("LG004", index_path, f"shard {shard!r} is not a file name in the index's folder"))
        if not os.path.lexists(os.path.join(folder, shard)):
            raise Unusable(Finding("LG004", index_path, f"shard {shard!r} is missing"))
        header = header_of(os.path.join(folder, shard), result)
        named = {k for k, v in weight_map.items() if v == shard}
        if named != set(header.tensors):
            odd = sorted(named ^ set(header.tensors))
            raise Unusable(
                Finding(
                    "LG004", header.file, f"the index and this shard disagree on {len(odd)} key(s), e.g. {odd[0]!r}"
                )
            )
        headers.append(header)
    return headers
