"""A mutant for upgrade gating: the reference with its scaling read differently, as a new release might."""

from __future__ import annotations

from loraguard.backends.reference import ReferenceBackend
from loraguard.core.config import LoraConfig, scaling
from loraguard.reference import LoraModel


class _RsloraAlwaysModel(LoraModel):
    """Scales every adapter by alpha / sqrt(r), whatever `use_rslora` says: same keys and config, other outputs."""

    def add_adapter(self, adapter_name: str, config: LoraConfig) -> None:
        super().add_adapter(adapter_name, config)
        for path, layer in self.lora_layers().items():
            if adapter_name in layer.scaling:
                layer.scaling[adapter_name] = scaling(config.rank_for(path), config.alpha_for(path), True)


class ScalingReadDifferently(ReferenceBackend):
    """Named like the reference: it plays a later release of the same library, compared with a baseline of it."""

    model_class = _RsloraAlwaysModel
