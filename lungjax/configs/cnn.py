"""The study's CNN and recipe: 256x256 RGB, rescale 1/255, class weights, Adam 1e-3, 10 epochs, batch 16.

lungjax train --config=cnn --config.data.root=DATA --workdir=W
(in a checkout: python -m lungjax.main --config=configs/cnn.py --config.data.root=DATA --workdir=W)
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """Returns the study's configuration; variants import it and change a few fields."""
  config = ml_collections.ConfigDict()
  config.format_version = 1  # Of the config.json a run writes (run_fields.FORMAT_VERSION; older ones: upgrade).
  config.task = 'classify'  # 'classify' (these classifiers) or 'lungs' (the lung U-Net: configs/lungs.py).
  config.name = 'cnn'
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  # A folder holding train/ and optionally test/, each with one sub-folder per class.
  # Empty: download the Kaggle dataset below with kagglehub (needs a network).
  config.data.root = ''
  config.data.kaggle_dataset = 'pranavraikokte/covid19-image-dataset'
  config.data.classes = ('Covid', 'Normal', 'Viral Pneumonia')
  config.data.image_size = 256
  config.data.val_fraction = 0.2
  # Images whose 32x32 grey thumbnails correlate at least this much are near copies: kept on one side of splits.
  config.data.near_copy_threshold = 0.96
  config.data.split_seed = 0  # Fixes the validation split and the folds; config.seed drives init and shuffling.
  config.data.skip_bad_images = False
  config.data.decode_threads = 0  # 0: one per CPU core (decodes in flight share images.DECODE_MEMORY_BUDGET, 2 GiB).
  # A TFDS data_dir that `python -m lungjax.tools.prepare` filled: train and test read from its array_record files
  # (decoded once, pixels read per batch, never all in memory) instead of decoding root/ each run. '' decodes root/.
  config.data.prepared_dir = ''
  # Several labelled sources in one run (lungjax/data/sources.py). The main source is root's train/, named
  # source_name ('' : the root folder's basename, or the Kaggle dataset's name); it must hold every class.
  config.data.source_name = ''
  # One extra source: a folder of class sub-folders (no train/ level), its folder names mapped onto classes as
  # config.eval.class_names reads them ('COVID=Covid,Normal=Normal'), named extra_source_name ('': the basename).
  # It may hold only some classes. Not with prepared_dir (which holds one root only).
  config.data.extra_root = ''
  config.data.extra_class_names = ''
  config.data.extra_source_name = ''
  # More extra sources: 'NAME=DIR' or 'NAME=DIR;FOLDER=Class,FOLDER=Class' strings, e.g. on the command line
  # --config.data.extra_sources="('adult=/data/adult;COVID=Covid,NORMAL=Normal',)". Source names must differ.
  # Validation split and folds are stratified by class and source; copies across sources stay on one side.
  config.data.extra_sources = ()
  # Metadata tables (CSV, lungjax/data/metadata.py): the main source's (metadata) and extra_root's (extra_metadata);
  # an extra_sources entry names its own with ';metadata=CSV' (and ';group_by=', ';file_column='). Rows are joined to
  # images by metadata_file_column: a path relative to the table's folder or the image folder, or a base name.
  config.data.metadata = ''
  config.data.extra_metadata = ''
  config.data.metadata_file_column = 'file'
  # A table column whose films stay on one side of the split and of every fold (e.g. 'patientid'), merged with the
  # copy groups; for every source with a table unless it names its own. '': copies only.
  config.data.group_by = ''
  # Preprocessing that removes what tells sources apart (lungjax/data/preprocess.py), run alike at train, eval,
  # explain, predict and in the Python API; every step off by default.
  config.data.preprocess = ml_collections.ConfigDict()
  config.data.preprocess.working_size = 0  # >0: area-average every image to this side first (0: off).
  config.data.preprocess.acquisition_size = 0  # >0 (below working_size): through this lower resolution first.
  config.data.preprocess.crop_borders = False  # Crop near-constant edge rows / columns (frames, letterboxing).
  config.data.preprocess.border_tolerance = 6.0  # A border row's grey-level standard deviation at most this.
  config.data.preprocess.border_max_fraction = 0.2  # The most cropped from each edge, as a fraction of the side.
  config.data.preprocess.window_percentiles = (0.0, 100.0)  # E.g. (1, 99): stretch to 0-255 and clip. (0, 100): off.
  config.data.preprocess.intensity = 'none'  # 'none', 'equalize' (histogram) or 'clahe' (equalize_adapthist).
  config.data.preprocess.clahe_clip_limit = 0.01
  # 'crop' (to the lungs' box) / 'fill' (zeros outside the lungs) by the shipped lung U-Net's mask (lungjax/lungs.py).
  config.data.preprocess.lungs = 'none'
  config.data.preprocess.lung_margin = 0.05  # 'crop': the lungs' box grown by this fraction on each side.
  # Fill burned-in markers (L, R, AP, PORTABLE, arrows; lungjax/data/markers.py) before the model sees the film.
  config.data.mask_markers = False

  config.model = ml_collections.ConfigDict()
  config.model.name = 'cnn'
  config.model.conv_features = (32, 64, 128)
  config.model.dense_features = (128, 128)
  config.model.dropout_rate = 0.3
  # 'flatten' (the study's: the last map flattened into dense_features) or 'gap' (global average pooling, then one
  # dense layer of dense_features[-1]: position-invariant, ~0.1% of the weights; lungjax/models/cnn.py).
  config.model.head = 'flatten'
  # How conv and max-pool are lowered (same values and gradients within 1e-4; tests/layers_test.py and
  # tests/kernels_test.py check): conv 'xla' (lax.conv), 'patches' (im2col matmuls) or 'blas' (C++ custom calls:
  # im2col blocks + OpenBLAS, CPU float32); pool 'reduce_window', 'reshape' or 'cpu_kernel' (relu + reshape pool,
  # gradient in one C++ pass). 'auto': blas / cpu_kernel on one CPU device in float32 when they build, else
  # xla / reshape (GPU, TPU, several devices, bfloat16).
  config.model.conv_impl = 'auto'
  config.model.pool_impl = 'auto'
  # Compute dtype: 'float32', or 'bfloat16' (mixed precision for GPU/TPU: float32 params, logits and loss).
  config.model.dtype = 'float32'
  # A Keras ImageNet weights file (.h5 / .weights.h5) to start from; '' trains from scratch.
  config.model.init_from = ''

  config.train = ml_collections.ConfigDict()
  config.train.num_epochs = 10
  config.train.batch_size = 16
  config.train.learning_rate = 1e-3
  # 'constant' (the study's) or 'cosine': decayed from learning_rate to 0 over the run's steps (optax).
  config.train.lr_schedule = 'constant'
  config.train.adam_b1 = 0.9  # Keras' Adam defaults.
  config.train.adam_b2 = 0.999
  config.train.adam_eps = 1e-7
  config.train.class_weighting = 'balanced'  # 'balanced' (n / (k * count_c)) or 'none'.
  # With several sources: 'balanced' also gives every source of a class the same share of that class's weight;
  # 'within_source' balances the classes inside each source and weighs sources by size, in place of the class
  # weights; 'none' weighs images by their class only (splits.example_weights).
  config.train.source_weighting = 'none'
  config.train.log_every_steps = 5
  config.train.freeze_backbone_epochs = 0  # With model.init_from: train only the head for these epochs.
  # XLA options for the jitted train / eval steps, on the CPU backend only: 'name=value;name=value'.
  # An empty YNNPACK fusion list: its fused conv kernel gradient is several times slower here (benchmarks.bench).
  config.train.cpu_compiler_options = 'xla_cpu_experimental_ynn_fusion_type='
  # XLA:CPU: glibc keeps freed memory for reuse while the process's RSS is below this many GB, so that each step's
  # buffers are not page-faulted in afresh; above it free pages are handed back (lungjax/cpu/host_memory.py). 0: glibc's
  # defaults (0.887x the Keras model's speed instead of 1.096x on 2 cores; results/bench/README.md).
  config.train.keep_freed_host_memory_gb = 2.2

  # On-device augmentation of training batches (the study used none; the cnn_augment config turns it on).
  # Each op fires per example with its probability and draws a value uniformly from its (low, high) range.
  config.augment = ml_collections.ConfigDict()
  config.augment.enabled = False
  config.augment.rotation_prob = 0.5
  config.augment.rotation_degrees = (-10.0, 10.0)  # Counter-clockwise: a patient a little off-square.
  config.augment.zoom_prob = 0.5
  config.augment.zoom_range = (0.9, 1.1)  # Above 1 zooms in.
  config.augment.shift_prob = 0.5
  config.augment.shift_fraction = (-0.08, 0.08)  # Of the height and width, each axis drawn on its own.
  # A chest is not mirror-symmetric (the heart sits on the patient's left): no horizontal flips by default.
  config.augment.hflip_prob = 0.0
  config.augment.brightness_prob = 0.5
  config.augment.brightness_delta = (-0.1, 0.1)  # Fractions of 255 added: exposure differences.
  config.augment.contrast_prob = 0.5
  config.augment.contrast_range = (0.85, 1.15)  # Factors about each image's mean.
  # Aimed at what differs between sources (issue 23; lungjax/data/augment.py), all off (probability 0) by default.
  config.augment.crop_prob = 0.0  # Random resized crop: area fraction crop_scale, width/height ratio crop_ratio.
  config.augment.crop_scale = (0.6, 1.0)
  config.augment.crop_ratio = (0.8, 1.25)
  config.augment.gamma_prob = 0.0  # Film response: 255 * (x / 255) ** gamma.
  config.augment.gamma_range = (0.7, 1.5)
  config.augment.resolution_prob = 0.0  # Down to one of these fractions of the side (antialiased), back up.
  config.augment.resolution_factors = (0.25, 0.5, 0.75)
  config.augment.blur_prob = 0.0  # Gaussian blur, sigma in pixels (at most augment.MAX_BLUR_SIGMA).
  config.augment.blur_sigma = (0.3, 1.5)
  config.augment.noise_prob = 0.0  # Gaussian noise, standard deviation as a fraction of 255.
  config.augment.noise_std = (0.0, 0.04)
  config.augment.pad_prob = 0.0  # Border padding: each edge padded by this fraction of the side, a random grey.
  config.augment.pad_fraction = (0.0, 0.12)
  config.augment.jpeg_prob = 0.0  # JPEG re-encoding at a random quality: on the host, in the input pipeline.
  config.augment.jpeg_quality = (20.0, 95.0)

  # The study's autoencoder variant (the autoencoder config): pretrain the CNN's conv stack as an encoder.
  config.autoencoder = ml_collections.ConfigDict()
  config.autoencoder.enabled = False
  # Stage 1 (workdir/autoencoder/): reconstruction MSE over the train split, plus any extra unlabelled folders.
  config.autoencoder.num_epochs = 10
  config.autoencoder.learning_rate = 1e-3
  config.autoencoder.batch_size = 16
  # Folders walked recursively for .jpg/.jpeg/.png; exact copies of validation images are dropped.
  config.autoencoder.extra_dirs = ()
  # Stage 2: True keeps the encoder frozen for all epochs; False fine-tunes it (after train.freeze_backbone_epochs).
  config.autoencoder.freeze_encoder = True

  config.checkpoint = ml_collections.ConfigDict()
  # Validation metric that picks the best checkpoint: the study ranks recall > F1 > precision > accuracy.
  # With several sources, 'worst_source_macro_recall' ranks by the lowest of the sources' macro recalls.
  config.checkpoint.best_metric = 'macro_recall'
  config.checkpoint.keep_latest = 1
  config.checkpoint.keep_best = 1
  # Resuming a workdir whose checkpoints were saved by a run with another fingerprint (model, seed, batch size,
  # classes, file list, split, processes, loader threads): 'error' refuses with the diff; 'fresh' moves them to
  # checkpoints.replaced-<time>/ and starts over.
  config.checkpoint.on_mismatch = 'error'
  # eval / explain / predict: a corrupt chosen checkpoint is an error naming the step; True uses the newest good one.
  config.checkpoint.fallback_to_good_step = False

  # Cross-validation and repeats: folds > 1 trains one model per grouped, stratified fold of train;
  # seeds > 1 repeats the run over seeds seed, seed+1, ... on the same split. Both report mean ± std.
  config.cv = ml_collections.ConfigDict()
  config.cv.folds = 0
  # True: leave one source out (lungjax/experiments/loso.py): each training source held out in turn, trained on the others,
  # scored on it (WORKDIR/loso/); with config.seeds seeds each. Needs extra sources; not with folds.
  config.cv.by_source = False
  config.seeds = 1

  config.eval = ml_collections.ConfigDict()
  # --mode=eval: the folder of class sub-folders to evaluate, or '@validation': the run's validation split.
  # Several folders, comma-separated ('A,B'), are each a source (named by its basename): metrics.json then has
  # per_source.<name> beside the pooled metrics. class_names below applies to every folder.
  config.eval.dir = ''
  config.eval.step = -1  # -1: the best checkpoint by checkpoint.best_metric.
  config.eval.batch_size = 16
  config.eval.n_bootstrap = 2000  # Stratified bootstrap resamples behind every 95% interval.
  config.eval.ensemble = ''  # More workdirs (comma-separated) whose best checkpoints are averaged with this one.
  config.eval.tta_views = 0  # Test-time augmented views (config.augment's ranges) averaged with the plain image.
  # Folders named otherwise than the classes, e.g. 'COVID=Covid,NORMAL=Normal,PNEUMONIA=Viral Pneumonia'.
  config.eval.class_names = ''
  # Subgroups (lungjax/data/metadata.py): a metadata CSV joined to the evaluated images by metadata_file_column, and
  # the columns to cut every metric by: 'sex,view,age:0-18,18-40,40-65,65-' (a bin LOW-HIGH holds LOW <= x < HIGH,
  # 'LOW-' everything from LOW; the items after COLUMN:BIN that read as bins are that column's). Empty values are
  # the group 'unknown'. A subgroup under subgroup_min_images images (or of a class, for its recall gap) is listed as
  # too small, without numbers.
  config.eval.metadata = ''
  config.eval.metadata_file_column = 'file'
  config.eval.subgroups = ''
  config.eval.subgroup_min_images = 10
  # Printed in every report: what a score on this dataset can and cannot mean.
  config.eval.caveat = (
      'The Covid images of this dataset are adult radiographs (Cohen et al., Figure1) while the Normal and Viral '
      'Pneumonia images come from a paediatric set (Kermany et al.): a model can score well by telling children '
      'from adults. Check where it looks (--mode=explain) before trusting a score.')

  # Multi-host runs (a TPU pod, several GPU hosts, or CPU processes): every process runs the same command and
  # jax.distributed.initialize() joins them before any device is touched. Empty fields are detected by JAX
  # (Cloud TPU VMs, SLURM, Open MPI); elsewhere set all three. The workdir must be shared (same path) by all.
  config.distributed = ml_collections.ConfigDict()
  config.distributed.enabled = False
  config.distributed.coordinator_address = ''  # host:port of process 0, e.g. '10.0.0.2:8476'; '' detects it.
  config.distributed.num_processes = 0  # 0 detects it.
  config.distributed.process_id = -1  # This process's index in [0, num_processes); -1 detects it.
  config.distributed.cpu_collectives = 'gloo'  # Cross-process collectives of the CPU backend: 'gloo' or 'mpi'.
  config.distributed.initialization_timeout_s = 300  # How long to wait for every process to join.

  # --mode=shortcuts (lungjax/explain/shortcuts.py): where 'the lungs' are. 'mask': each film's mask from the shipped lung
  # U-Net (lungjax/lungs.py); 'box': the fixed rows 10-85% x columns 10-90% (the fallback without the weights).
  config.shortcuts = ml_collections.ConfigDict()
  config.shortcuts.region = 'mask'
  config.explain = ml_collections.ConfigDict()
  config.explain.dir = ''  # --mode=explain: the folder of images to explain.
  config.explain.layer = 'Conv_2'  # The module whose activations Grad-CAM weighs: the CNN's last conv.
  config.explain.class_name = ''  # '' explains the predicted class.
  return config
