"""A LoRA adapter's configuration, read and written as peft's `adapter_config.json`, with validation.

The scaling rule lives here: ``alpha / r`` (``alpha / sqrt(r)`` with rsLoRA), with `rank_pattern` and
`alpha_pattern` overriding r and alpha per module.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loraguard.core.matching import PatternError, check_pattern, entry_matches, layer_index, pattern_key

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
LEGACY_WEIGHTS_NAME = "adapter_model.bin"

_BIAS_MODES = ("none", "all", "lora_only")
#: Largest rank accepted: any real rank is far below; a config from a hostile file may claim thousands of digits.
MAX_RANK = 2**31 - 1
#: peft's task types (its TaskType values); `core.tasks` says which heads each adds to modules_to_save.
TASK_TYPES = ("SEQ_CLS", "TOKEN_CLS", "QUESTION_ANS", "CAUSAL_LM", "SEQ_2_SEQ_LM", "FEATURE_EXTRACTION")


class ConfigError(ValueError):
    """An invalid adapter configuration; the message names the file and the field."""

    def __init__(self, source: str, fieldname: str, problem: str):
        super().__init__(f"{source}: field '{fieldname}': {problem}")
        self.source, self.field, self.problem = source, fieldname, problem


@dataclass
class LoraConfig:
    """The LoRA fields loraguard understands, under peft's names; unknown peft fields ride along in `extra`."""

    r: int = 8
    lora_alpha: float = 8
    target_modules: str | list[str] | None = None
    modules_to_save: list[str] | None = None
    lora_dropout: float = 0.0
    fan_in_fan_out: bool = False
    use_rslora: bool = False
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)
    bias: str = "none"
    lora_bias: bool = False
    use_dora: bool = False
    init_lora_weights: bool | str = True
    task_type: str | None = None
    layers_to_transform: int | list[int] | None = None
    layers_pattern: str | list[str] | None = None
    #: Not a field of peft's adapter_config.json but of get_peft_model: keep adapter weights in float32 on a
    #: bf16/fp16 model (True, peft's default) or in the model's dtype (False); None: each library's default (the
    #: reference's: False).
    autocast_adapter_dtype: bool | None = None
    #: Rows of the input embedding (a list) or of named embeddings (a dict) trained in place of full copies.
    trainable_token_indices: list[int] | dict[str, list[int]] | None = None
    #: peft >= 0.17: parameters adapted directly (``experts.gate_up_proj``, a 2D or a 3D (experts, ., .) tensor),
    #: matched as ``<module>.<parameter>`` equal to an entry or ending in ``.<entry>`` (see reference.params).
    target_parameters: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate("LoraConfig")

    def validate(self, source: str) -> None:
        """Raise ConfigError naming `source` and the field for any value peft would misread or reject."""

        def need(ok: bool, name: str, problem: str) -> None:
            if not ok:
                raise ConfigError(source, name, problem)

        need(_is_rank(self.r), "r", f"must be a positive integer up to 2**31 - 1, got {_show(self.r)}")
        need(_is_number(self.lora_alpha), "lora_alpha", f"must be a finite number, got {_show(self.lora_alpha)}")
        need(
            _is_number(self.lora_dropout) and 0 <= self.lora_dropout < 1,
            "lora_dropout",
            f"must be in [0, 1), got {_show(self.lora_dropout)}",
        )
        need(self.bias in _BIAS_MODES, "bias", f"must be one of {_BIAS_MODES}, got {_show(self.bias)}")
        tm = self.target_modules
        need(
            tm is None or isinstance(tm, str) or (isinstance(tm, list) and all(isinstance(t, str) for t in tm)),
            "target_modules",
            f"must be a regex string or a list of module names, got {_show(tm)}",
        )
        if isinstance(tm, str):
            _need_pattern(source, "target_modules", tm)
        mts = self.modules_to_save
        need(
            mts is None or (isinstance(mts, list) and all(isinstance(m, str) and m for m in mts)),
            "modules_to_save",
            f"must be null or a list of module names, got {_show(mts)}",
        )
        need(
            self.autocast_adapter_dtype is None or isinstance(self.autocast_adapter_dtype, bool),
            "autocast_adapter_dtype",
            f"must be null, true or false, got {_show(self.autocast_adapter_dtype)}",
        )
        for name in ("fan_in_fan_out", "use_rslora", "lora_bias", "use_dora"):
            need(
                isinstance(getattr(self, name), bool), name, f"must be true or false, got {_show(getattr(self, name))}"
            )
        need(
            isinstance(self.init_lora_weights, (bool, str)),
            "init_lora_weights",
            f"must be a boolean or an init method name, got {_show(self.init_lora_weights)}",
        )
        need(
            self.task_type is None or self.task_type in TASK_TYPES,
            "task_type",
            f"must be null or one of {TASK_TYPES}, got {self.task_type!r}",
        )
        ltt = self.layers_to_transform
        need(
            ltt is None
            or (isinstance(ltt, int) and not isinstance(ltt, bool) and ltt >= 0)
            or (isinstance(ltt, list) and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ltt)),
            "layers_to_transform",
            f"must be null, a layer index or a list of layer indices, got {_show(ltt)}",
        )
        need(
            ltt is None or not isinstance(tm, str),
            "layers_to_transform",
            "cannot be used with a regex target_modules (peft refuses it too): name the layers in the regex",
        )
        lp = self.layers_pattern
        need(
            lp is None or isinstance(lp, str) or (isinstance(lp, list) and all(isinstance(p, str) for p in lp)),
            "layers_pattern",
            f"must be null, a name or a list of names, got {_show(lp)}",
        )
        tp = self.target_parameters
        need(
            tp is None or (isinstance(tp, list) and all(isinstance(t, str) and t for t in tp)),
            "target_parameters",
            f"must be null or a list of parameter names (not a regex string), got {_show(tp)}",
        )
        tti = self.trainable_token_indices
        need(
            tti is None
            or _is_indices(tti)
            or (isinstance(tti, dict) and all(isinstance(k, str) and k and _is_indices(v) for k, v in tti.items())),
            "trainable_token_indices",
            f"must be null, a list of row indices or an object of module -> such list, got {_show(tti)}",
        )
        for name, positive_int in (("rank_pattern", True), ("alpha_pattern", False)):
            pat = getattr(self, name)
            need(isinstance(pat, dict), name, f"must be an object, got {type(pat).__name__}")
            for k, v in pat.items():
                ok = _is_rank(v) if positive_int else _is_number(v)
                want = "positive integer up to 2**31 - 1" if positive_int else "finite number"
                need(ok, f"{name}.{k[:60]}", f"must be a {want}, got {_show(v)}")
                _need_pattern(source, f"{name} key", k)

    def in_layers(self, module: str) -> bool:
        """Does `layers_to_transform` (with `layers_pattern`) keep `module`? Always, without it or for a regex."""
        if self.layers_to_transform in (None, []) or isinstance(self.target_modules, str):
            return True
        if module in (self.target_modules or []):  # named in full: peft applies no layer filter to it either
            return True
        index = layer_index(module, self.layers_pattern)
        wanted = self.layers_to_transform
        return index is not None and (index == wanted if isinstance(wanted, int) else index in wanted)

    def wraps_parameters(self, module: str) -> bool:
        """Could a saved key's `module` be a wrapper of a `target_parameters` entry (peft's ParamWrapper)? One
        module's parameters nest one wrapper each, adding `base_layer` segments, dropped here; the key names no
        parameter, so an entry's module part (``experts`` of ``experts.gate_up_proj``) decides, as a dotted suffix."""
        segs = module.split(".")
        while segs and segs[-1] == "base_layer":
            segs.pop()
        path = ".".join(segs)
        holders = [entry.rpartition(".")[0] for entry in self.target_parameters or []]
        return any(not h or entry_matches(path, h) for h in holders)

    def rank_for(self, module: str) -> int:
        """The rank of `module`'s adapter: `rank_pattern` wins over `r`."""
        key = pattern_key(module, self.rank_pattern)
        return self.rank_pattern[key] if key is not None else self.r

    def alpha_for(self, module: str) -> float:
        """The alpha of `module`'s adapter: `alpha_pattern` wins over `lora_alpha`."""
        key = pattern_key(module, self.alpha_pattern)
        return self.alpha_pattern[key] if key is not None else self.lora_alpha

    def scaling_for(self, module: str) -> float:
        """The factor applied to ``B @ A`` on `module`."""
        return scaling(self.rank_for(module), self.alpha_for(module), self.use_rslora)

    def to_json_dict(self) -> dict[str, Any]:
        """The dict peft writes as `adapter_config.json` (its extra fields preserved)."""
        out = {"peft_type": "LORA", "task_type": None, "base_model_name_or_path": None, "inference_mode": True}
        out.update(self.extra)
        body = asdict(self)
        body.pop("extra")
        body.pop("autocast_adapter_dtype")  # an option of the wrapping call, never saved
        if body["target_parameters"] is None:  # written only when set: peft before 0.17 refuses fields it lacks
            body.pop("target_parameters")
        out.update(body)
        return out

    def save(self, directory: str | Path) -> Path:
        """Write `adapter_config.json` into `directory` the way peft does (sorted keys, indent 2)."""
        path = Path(directory) / CONFIG_NAME
        path.write_text(json.dumps(self.to_json_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def from_json_dict(cls, data: Any, source: str = "adapter_config.json") -> LoraConfig:
        """Build from a parsed config, refusing non-LoRA adapters and invalid values by name."""
        if not isinstance(data, dict):
            raise ConfigError(source, "<root>", f"must be a JSON object, got {type(data).__name__}")
        peft_type = data.get("peft_type", "LORA")
        if peft_type != "LORA":
            raise ConfigError(source, "peft_type", f"loraguard handles LORA adapters, this one is {peft_type!r}")
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        kwargs = {k: v for k, v in data.items() if k in known}
        for nullable in ("rank_pattern", "alpha_pattern"):
            if kwargs.get(nullable) is None:
                kwargs.pop(nullable, None)
        extra = {k: v for k, v in data.items() if k not in known}
        try:
            return cls(**kwargs, extra=extra)
        except ConfigError as err:
            raise ConfigError(source, err.field, err.problem) from None

    @classmethod
    def load(cls, directory: str | Path) -> LoraConfig:
        """Read `adapter_config.json` from an adapter directory."""
        path = Path(directory) / CONFIG_NAME
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no adapter config; is this an adapter directory?") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(str(path), "<root>", f"not valid JSON ({err})") from None
        return cls.from_json_dict(data, str(path))


def scaling(rank: int, alpha: float, use_rslora: bool) -> float:
    """LoRA's scale: alpha / r, or alpha / sqrt(r) for rsLoRA."""
    return alpha / math.sqrt(rank) if use_rslora else alpha / rank


def _is_number(v: Any) -> bool:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an int too large for a float (a config may hold thousands of digits)
        return False


def _is_indices(v: Any) -> bool:
    """A non-empty list of non-negative integers (row indices; one listed twice is one row, as in peft)."""
    ints = isinstance(v, list) and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in v)
    return ints and bool(v)


def _is_rank(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_RANK


def _show(v: Any, limit: int = 60) -> str:
    """A value quoted in an error message, cut short: configs come from files that may be hostile."""
    try:
        text = repr(v)
    except ValueError:  # an int past Python's int-to-str digit limit
        text = f"<an integer of about {int(v.bit_length() * 0.30103)} digits>"
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _need_pattern(source: str, fieldname: str, pattern: str) -> None:
    try:
        check_pattern(pattern)
    except PatternError as err:
        raise ConfigError(source, fieldname, err.problem) from None
