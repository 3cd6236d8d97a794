"""ResNet-18 from scratch on the study's data: 256x256, batch 16, the CNN's recipe otherwise.

ImageNet weights (keras.applications.ResNet50's file, e.g. resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5,
or any ResNet50 saved with model.save_weights('x.weights.h5')):
  --config.model.depth=50 --config.model.preprocessing=caffe --config.model.init_from=/path/to/file.h5
and optionally --config.train.freeze_backbone_epochs=N to train only the head first.

lungjax train --config=resnet --config.data.root=DATA
(in a checkout: python -m lungjax.main --config=configs/resnet.py --config.data.root=DATA)
"""

import ml_collections

from lungjax.configs import cnn


def get_config() -> ml_collections.ConfigDict:
  """Returns the study's configuration with a ResNet (18 layers, from scratch) as the model."""
  config = cnn.get_config()
  config.name = 'resnet'
  config.model = ml_collections.ConfigDict()
  config.model.name = 'resnet'
  config.model.depth = 18  # 18 or 34 (basic blocks) or 50 (Keras' ResNet50 layout, bottlenecks).
  config.model.width = 64  # Features of the first stage; doubled at each of the next three.
  config.model.dropout_rate = 0.3  # Before the head.
  config.model.preprocessing = 'rescale'  # 'rescale' (x/255) or 'caffe' (what Keras' ImageNet weights expect).
  # 'batch' (BatchNorm: running statistics for eval mode) or 'group' (GroupNorm: none; trains slower here).
  config.model.norm = 'batch'
  # BatchNorm's running statistics: new = bn_momentum * old + (1 - bn_momentum) * batch's. Keras' 0.99 still mostly
  # holds the initial values after the ~36 steps of 3 epochs on ~200 images, and validation accuracy swung between
  # 0.28 and 0.74; 0.9 follows the weights within an epoch (lungjax issue 12; tests/resnet_vgg_test.py).
  config.model.bn_momentum = 0.9
  # A Keras ImageNet weights file (.h5 / .weights.h5) to start from; '' trains from scratch.
  config.model.dtype = 'float32'  # Or 'bfloat16': mixed precision (float32 params and logits).
  config.model.init_from = ''
  config.explain.layer = 'conv5'  # The last conv stage (resnet.LAST_STAGE): its output feeds the pool.
  return config
