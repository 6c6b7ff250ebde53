"""Mutant backends: the reference implementation with exactly one defect each, taken from real peft bugs.

A suite that passes one of these is itself broken. Each is usable as ``--loraguard-backend tests.mutants:NAME``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from loraguard.backends.peft import PeftBackend
from loraguard.backends.reference import ReferenceBackend
from loraguard.core.keys import MODULE_BIAS, PEFT_PREFIX
from loraguard.core.merge_math import delta_weight
from loraguard.reference import LoraModel
from loraguard.reference import io as reference_io
from loraguard.reference.kinds import LoraConv, LoraEmbedding, LoraLinear, wrap_layer
from loraguard.reference.layers import LoraLayer
from loraguard.reference.params import LoraParameter
from loraguard.reference.tokens import TrainableTokens


class _Mutant(ReferenceBackend):
    defect = ""
    #: IDs of the default profile's scenarios that show the defect: tests/test_mutants.py runs them first, so the
    #: catch comes early; every other scenario still follows, so the test fails only if none catches it.
    shown_by: tuple[str, ...] = ()


# -- 1. modules_to_save / targets matched with a bare str.endswith (peft seed bug 4) ------------------------------
class _BareSuffixModel(LoraModel):
    @staticmethod
    def _selects(name, spec):
        if isinstance(spec, list):
            return any(name.endswith(entry) for entry in spec)
        return LoraModel._selects(name, spec)


class BareSuffix(_Mutant):
    name, model_class, defect = "mutant-bare-suffix", _BareSuffixModel, "names matched with bare endswith"
    shown_by = ("nested-r4-f32",)


# -- 2. modules_to_save shared between adapters (peft seed bug 1: adapter 2 inherits adapter 1's) -------------------
class _SharedSavedModel(LoraModel):
    def add_adapter(self, adapter_name, config):
        import dataclasses

        inherited = [m for c in self.peft_config.values() for m in (c.modules_to_save or [])]
        if inherited:
            merged = list(dict.fromkeys(inherited + list(config.modules_to_save or [])))
            config = dataclasses.replace(config, modules_to_save=merged)
        super().add_adapter(adapter_name, config)


class SharedModulesToSave(_Mutant):
    name, model_class, defect = "mutant-shared-mts", _SharedSavedModel, "modules_to_save leak into later adapters"


# -- 3. the adapter name kept in saved keys (peft seed bug 2) --------------------------------------------------------
class _NamedKeysModel(LoraModel):
    def adapter_state_dict(self, adapter_name="default"):
        state = self.model.state_dict(keep_vars=True)
        return {
            PEFT_PREFIX + k.in_model(adapter_name): state[k.in_model(adapter_name)].detach()
            for k in self.adapter_keys(adapter_name)
        }


class AdapterNameInKeys(_Mutant):
    name, model_class, defect = "mutant-named-keys", _NamedKeysModel, "adapter name kept in saved keys"


# -- 4/5/6. layer-level merge defects ----------------------------------------------------------------------------------
def _layer_model(mixin: type) -> type[LoraModel]:
    """A LoraModel whose wrapped layers carry `mixin`'s one defect."""
    classes = {
        cls: type(f"{mixin.__name__}{cls.__name__}", (mixin, cls), {}) for cls in (LoraLinear, LoraEmbedding, LoraConv)
    }

    class Model(LoraModel):
        @staticmethod
        def _wrap_layer(module: nn.Module) -> LoraLayer:
            layer = wrap_layer(module)
            layer.__class__ = classes[type(layer)]
            return layer

    return Model


class _NoScaleAtMerge:
    def delta(self, name):
        a, b = self.factors(name)
        return delta_weight(a, b, 1.0, self.kind, self.fan_in_fan_out)


class _MergeTwice:
    @torch.no_grad()
    def merge(self, names, safe=False, untie=False):
        self.merged_adapters = [n for n in self.merged_adapters if n not in names]
        weight = self.base_weight()
        for name in names:
            if name in self.scaling:
                weight.copy_((weight.float() + self.delta(name)).to(weight.dtype))
                self.merged_adapters.append(name)


class _NoTranspose:
    def delta(self, name):
        a, b = self.factors(name)
        return delta_weight(a, b, self.scaling[name], self.kind, fan_in_fan_out=False)


class _DoraNotRenormalisedAtUnmerge:
    def unmerged_value(self, name, weight):
        self._before_merge.pop(name, None)  # takes the delta out but leaves the m/||W+dW|| rescaling in
        return (weight.float() - self.delta(name)).to(weight.dtype)


class _EmbedScaleLeftOut:
    def embed_scale(self):
        return None  # the LoRA part of a scaled embedding (Gemma's) misses the constant the base output has


class _ExpertAxisMixup(LoraParameter):
    def delta(self, name):  # B's columns read expert-major like A's rows: peft's two layouts differ, this one does not
        if self.kind != "experts":
            return super().delta(name)
        a, b = (t.float() for t in self.factors(name))
        per_a = a.reshape(self.experts, -1, a.shape[-1])
        per_b = b.reshape(b.shape[0], self.experts, -1).permute(1, 0, 2)
        return (per_b @ per_a) * self.scaling[name]


class _ExpertAxisMixupModel(LoraModel):
    @staticmethod
    def _wrap_parameter(module, name):
        return _ExpertAxisMixup(module, name)


class ScalingDroppedAtMerge(_Mutant):
    name, model_class, defect = "mutant-no-scale", _layer_model(_NoScaleAtMerge), "scaling dropped at merge"


class DoubleMerge(_Mutant):
    name, model_class, defect = "mutant-double-merge", _layer_model(_MergeTwice), "merging twice applies twice"


class NoFanInFanOutTranspose(_Mutant):
    name, model_class, defect = "mutant-no-transpose", _layer_model(_NoTranspose), "fan_in_fan_out not transposed"
    shown_by = ("gpt2-r4-f32",)


class ExpertAxisMixup(_Mutant):
    name, model_class = "mutant-expert-axis", _ExpertAxisMixupModel
    defect = "target_parameters: each expert's delta built from the wrong columns of lora_B"
    shown_by = ("moe-r4-f32",)


class DoraNotRenormalisedAtUnmerge(_Mutant):
    name, model_class = "mutant-dora-unmerge", _layer_model(_DoraNotRenormalisedAtUnmerge)
    defect = "DoRA magnitude not renormalised at unmerge"


class EmbedScaleLeftOut(_Mutant):
    name, model_class = "mutant-no-embed-scale", _layer_model(_EmbedScaleLeftOut)
    defect = "embedding scale left out of the LoRA path: merged and unmerged scaled embeddings disagree"
    shown_by = ("scaled-embedding-r4-f32",)


# -- 7. a load that silently skips keys (what made peft's merge_and_unload a no-op) -----------------------------------
class _SkippingLoadModel(LoraModel):
    @classmethod
    def from_pretrained(cls, model, directory, adapter_name="default", is_trainable=False):
        lora = cls(model, reference_io.read_config(Path(directory)), adapter_name)
        _, tensors = reference_io.read_weights(Path(directory))
        state = lora.model.state_dict(keep_vars=True)
        with torch.no_grad():
            for key in lora.adapter_keys(adapter_name):
                if key.saved() in tensors and key.role != "lora_B":  # lora_B keys silently not loaded
                    state[key.in_model(adapter_name)].copy_(tensors[key.saved()])
        return lora


class SilentlySkipsKeys(_Mutant):
    name, model_class, defect = "mutant-skip-keys", _SkippingLoadModel, "load silently skips lora_B keys"


# -- 8. re-wrapping walks into LoRA internals (peft seed bug 5: "Target module Dropout is not supported") --------------
class _RewrapModel(LoraModel):
    @staticmethod
    def _refuse_if_adapted(model):
        return None

    @staticmethod
    def _candidates(names):
        return list(names)


class RewrapTargetsDropout(_Mutant):
    name, model_class, defect = "mutant-rewrap", _RewrapModel, "re-wrap targets lora_dropout"


# -- 9. a weighted combination that drops a weight's sign (subtracting an adapter adds it instead) -------------------
class _UnsignedCombinationModel(LoraModel):
    def add_weighted_adapter(self, adapters, weights, adapter_name, **options):
        super().add_weighted_adapter(adapters, [abs(w) for w in weights], adapter_name, **options)


class CombinationDropsSign(_Mutant):
    name, model_class, defect = "mutant-unsigned-combination", _UnsignedCombinationModel, "combination drops signs"


# -- 10. a second adapter's regex searched inside LoRA wrappers (the founding bug: "Target module Dropout is not
# supported" from add_adapter with target_modules=".*(?:q_proj|v_proj).*" on peft releases of its time) -------------
class _RegexIntoInternalsModel(LoraModel):
    @staticmethod
    def _candidates(names):
        return list(names)

    @staticmethod
    def _wrap_layer(module):
        if isinstance(module, LoraLayer):
            return module
        try:
            return wrap_layer(module)
        except ValueError:
            raise ValueError(f"Target module {module} is not supported.") from None


class RegexIntoInternals(_Mutant):
    name, model_class, defect = "mutant-regex-internals", _RegexIntoInternalsModel, "second adapter regex hits Dropout"


# -- 11. a later adapter of a task model gets no task head (it trains and saves no classifier of its own) -------------
class _FirstHeadOnlyModel(LoraModel):
    def add_adapter(self, adapter_name, config):
        import dataclasses

        if self.peft_config:  # adapters added later: the task's head is not added to their modules_to_save
            config = dataclasses.replace(config, task_type=None)
        super().add_adapter(adapter_name, config)


class LaterAdapterNoTaskHead(_Mutant):
    name, model_class, defect = "mutant-no-task-head", _FirstHeadOnlyModel, "a later adapter gets no task head"
    shown_by = ("bert-tokcls-r4-f32",)


# -- 12/13. trainable tokens: a trained row written to the wrong index; a tied output head that does not follow --------
class _ReversedRows(TrainableTokens):
    def rows(self, name):
        indices, values = super().rows(name)
        return list(reversed(indices)), values  # value i lands on the row listed last-but-i: forward and merge agree


class _ReversedRowsModel(LoraModel):
    def _token_layer(self, path):
        leader = super()._token_layer(path)
        for layer in self.token_layers().values():
            layer.__class__ = _ReversedRows
        return leader


class TokenRowsMisplaced(_Mutant):
    name, model_class, defect = "mutant-token-rows", _ReversedRowsModel, "trainable token values on the wrong rows"
    shown_by = ("scaled-embedding-tokens-f32",)


class _UntiedTokensModel(LoraModel):
    def _tied_paths(self, path):
        return []  # the head that shares the embedding's tensor keeps the old rows until a merge writes them in


class TiedHeadIgnoresTokens(_Mutant):
    name, model_class, defect = "mutant-token-untied", _UntiedTokensModel, "tied output head ignores trainable tokens"
    shown_by = ("tied-embedding-tokens-f32",)


# -- 14. bias="all" trained like "lora_only": biases of modules LoRA does not wrap are neither trained nor saved ------
class _BiasAllAsLoraOnlyModel(LoraModel):
    def adapter_keys(self, adapter_name):
        return [k for k in super().adapter_keys(adapter_name) if k.role != MODULE_BIAS]


class BiasAllDropsModuleBiases(_Mutant):
    name, model_class = "mutant-bias-all", _BiasAllAsLoraOnlyModel
    defect = "bias='all' trains and saves only the wrapped layers' biases"
    shown_by = ("tied-embedding-r4-f32",)


# -- a release broken in many ways at once: for benchmarks of a red run (benchmarks/red_run_bench.py) --------------
class _ManyDefectsModel(_BareSuffixModel, _NamedKeysModel, _SkippingLoadModel, _layer_model(_NoScaleAtMerge)):  # type: ignore[misc]
    pass


class ManyDefects(_Mutant):
    name, model_class, defect = "mutant-many", _ManyDefectsModel, "bare suffix, named keys, lora_B not loaded, no scale"


MUTANTS: list[type[_Mutant]] = [
    BareSuffix,
    SharedModulesToSave,
    AdapterNameInKeys,
    ScalingDroppedAtMerge,
    DoubleMerge,
    NoFanInFanOutTranspose,
    DoraNotRenormalisedAtUnmerge,
    EmbedScaleLeftOut,
    SilentlySkipsKeys,
    RewrapTargetsDropout,
    CombinationDropsSign,
    RegexIntoInternals,
    LaterAdapterNoTaskHead,
    TokenRowsMisplaced,
    TiedHeadIgnoresTokens,
    BiasAllDropsModuleBiases,
    ExpertAxisMixup,
]


# -- peft with one defect each, for the areas the reference does not implement (peft's other tuners) ------------------
class TunerMergeDropsScaling(PeftBackend):
    """peft, except that merging a LoHa or LoKr adapter leaves out its alpha / r scaling."""

    name, defect = "mutant-tuner-no-scale", "LoHa/LoKr merge drops alpha / r"

    def merge(self, model: nn.Module, adapters: list[str] | None = None) -> None:
        from peft.tuners.lycoris_utils import LycorisLayer

        layers = [m for m in model.modules() if isinstance(m, LycorisLayer)]
        kept = [dict(m.scaling) for m in layers]
        for m in layers:
            m.scaling.update(dict.fromkeys(m.scaling, 1.0))
        try:
            super().merge(model, adapters)
        finally:
            for m, scaling in zip(layers, kept):
                m.scaling.update(scaling)


#: Mutants of peft: run on the scenarios of their area only (peft's documented LoRA bugs would fail first).
PEFT_MUTANTS: list[type[PeftBackend]] = [TunerMergeDropsScaling]
