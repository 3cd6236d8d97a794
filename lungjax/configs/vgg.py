"""VGG-16 from scratch on the study's data: 256x256, batch 16, Adam 1e-4 (1e-3 stalls a VGG without BatchNorm).

ImageNet weights (keras.applications.VGG16's file, e.g. vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5, or any
VGG16 saved with model.save_weights('x.weights.h5'); depth 19 takes VGG19's):
  --config.model.preprocessing=caffe --config.model.init_from=/path/to/file.h5
and optionally --config.train.freeze_backbone_epochs=N to train only the head first.

lungjax train --config=vgg --config.data.root=DATA
(in a checkout: python -m lungjax.main --config=configs/vgg.py --config.data.root=DATA)
"""

import ml_collections

from lungjax.configs import cnn


def get_config() -> ml_collections.ConfigDict:
  """Returns the study's configuration with a VGG (16 layers, from scratch) as the model."""
  config = cnn.get_config()
  config.name = 'vgg'
  config.model = ml_collections.ConfigDict()
  config.model.name = 'vgg'
  config.model.depth = 16  # 11, 16 or 19.
  config.model.width = 64  # Features of the first stage: x1, 2, 4, 8, 8 over the five stages.
  config.model.pooling = 'avg'  # 'avg' (global average) or 'flatten' (ties the model to data.image_size).
  config.model.dense_features = (256,)  # Hidden dense layers of the head, each followed by dropout.
  config.model.dropout_rate = 0.5
  config.model.preprocessing = 'rescale'  # 'rescale' (x/255) or 'caffe' (what Keras' ImageNet weights expect).
  # A Keras ImageNet weights file (.h5 / .weights.h5) to start from; '' trains from scratch.
  config.model.dtype = 'float32'  # Or 'bfloat16': mixed precision (float32 params and logits).
  config.model.init_from = ''
  config.train.learning_rate = 1e-4
  config.explain.layer = 'block5'  # The last conv stage (vgg.LAST_STAGE): its output, before the last pool.
  return config
