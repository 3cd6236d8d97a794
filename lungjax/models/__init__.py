"""The model registry: config.model.name → a flax.linen module built from config.model's fields."""

import flax.linen as nn
import ml_collections

from lungjax.models.cnn import CNN
from lungjax.models.resnet import ResNet
from lungjax.models.vgg import VGG

MODELS: dict[str, type[nn.Module]] = {'cnn': CNN, 'resnet': ResNet, 'vgg': VGG}
# config.model fields that configure training around the module, not the module itself.
NON_MODULE_FIELDS = ('name', 'init_from')


def create_model(model_config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
  """Builds the registered module named by model_config.name with the config's other fields."""
  if model_config.name not in MODELS:
    raise ValueError(f'config.model.name={model_config.name!r} is not one of the registered models {sorted(MODELS)}')
  fields = {k: v for k, v in model_config.items() if k not in NON_MODULE_FIELDS}
  module_class = MODELS[model_config.name]
  unknown = sorted(set(fields) - set(module_class.__dataclass_fields__))
  if unknown:
    raise ValueError(f'config.model has fields {unknown} that model {model_config.name!r} does not take')
  return module_class(num_classes=num_classes, **fields)
