"""Entry point: python -m lungjax.main --config=configs/cnn.py [--workdir=W] [--mode=train|eval|explain|shortcuts].

main() validates the config once (config_check.validate), then runs one function per mode: train (one run:
train.train_and_evaluate; folds or seeds: crossval.run), evaluate, explain, shortcuts. Each is importable and
prints a short summary of what it wrote.

--mode=eval, explain and shortcuts rebuild the model from the workdir's config.json; the command line may change only
lungjax.checkpoints.INFERENCE_FIELDS (eval.*, explain.*, where the data lies, ...).
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')  # clu's writers import TensorFlow: keep its start-up quiet.

import logging as std_logging  # pylint: disable=g-import-not-at-top
from collections.abc import Sequence  # pylint: disable=g-import-not-at-top
from typing import Any  # pylint: disable=g-import-not-at-top

import ml_collections  # pylint: disable=g-import-not-at-top
from absl import app, flags, logging  # pylint: disable=g-import-not-at-top,g-multiple-import
from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

from lungjax import config_check  # pylint: disable=g-import-not-at-top
from lungjax.experiments import crossval  # pylint: disable=g-import-not-at-top
from lungjax.runtime import distributed, preemption  # pylint: disable=g-import-not-at-top
from lungjax.runtime import run_fields  # pylint: disable=g-import-not-at-top
from lungjax import evaluate as evaluate_lib  # pylint: disable=g-import-not-at-top
from lungjax.explain import gallery as explain_lib  # pylint: disable=g-import-not-at-top
from lungjax import train as train_lib  # pylint: disable=g-import-not-at-top
from lungjax.explain import shortcuts as shortcuts_lib  # pylint: disable=g-import-not-at-top
from lungjax.cpu import host_memory  # pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Where checkpoints, logs and reports go (default: workdirs/<config.name>).')
flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'explain', 'shortcuts'],
                  'train: train and evaluate (resumes a workdir); eval: evaluate a checkpoint on --config.eval.dir; '
                  'explain: Grad-CAM of --config.explain.dir; shortcuts: does the model need the lungs of '
                  '--config.eval.dir (scores with them hidden / shown alone, Grad-CAM share in them).')
config_flags.DEFINE_config_file('config', None, 'A configs/*.py file; override fields as --config.a.b=value.',
                                lock_config=True)
flags.mark_flags_as_required(['config'])


class _QuietLibraries:
  """Drops orbax's and grain's INFO chatter from the log; their warnings and errors still show."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or not any(
        f'/{name}/' in record.pathname for name in ('orbax', 'grain'))


def overridden_fields() -> list[str]:
  """The config fields set explicitly on the command line ('model.conv_features' for --config.model.conv_features=,
  flag files included): eval and explain refuse those that would change the run's saved model."""
  return list(config_flags.get_override_values(FLAGS['config']))


def start_summary(config, mode: str, workdir: str) -> str:
  """A few lines on what a run is about to do: its data, model, steps and where its outputs go."""
  where = os.path.abspath(workdir)
  if mode == 'train':
    data = config.data.root or f'Kaggle {config.data.kaggle_dataset} (downloaded)'
    model = f'{config.model.name} at {config.data.image_size}x{config.data.image_size}'
    runs = config.cv.folds if config.cv.folds > 1 else config.seeds
    steps = (f'{config.train.num_epochs} epochs of batch {config.train.batch_size}, learning rate '
             f'{config.train.learning_rate}' + (f', {runs} runs' if runs > 1 else ''))
  else:
    data = config.eval.dir if mode == 'eval' else config.explain.dir
    model = f'the checkpoint and config.json in {where}'
    steps = f'batch {config.eval.batch_size}'
  return (f'{mode} {config.name}\n  data     {data}\n  model    {model}\n  steps    {steps}\n  outputs  {where} '
          '(the full config: config.json there, or --v=1)')


def trained_line(summary: dict[str, Any]) -> str:
  """The console's line on a finished run: its steps and the step it reports, chosen how (with no validation
  split, config.data.val_fraction=0, the latest step: no validation metric chose it)."""
  how = (f'by validation {summary["best_metric"]}' if summary.get('n_val') else
         'the latest step: no validation split (config.data.val_fraction=0), so no validation metric chose it')
  return f'trained {summary["num_steps"]} steps; best checkpoint step {summary["best_step"]} ({how})'


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """--mode=train: one run (train.train_and_evaluate), or folds / seeds (crossval.run); prints where results went."""
  if config.task == 'lungs':  # The lung U-Net (configs/lungs.py, lungjax/segmentation.py).
    from lungjax import segmentation  # pylint: disable=g-import-not-at-top
    summary = segmentation.train_and_evaluate(config, workdir)
    print(f'\ntrained the lung U-Net {summary["num_steps"]} steps; best step {summary["best_step"]} (validation '
          f'Dice {summary.get(f"val_dice_at_{config.data.image_size}px", float("nan")):.4f}); '
          f'{os.path.abspath(os.path.join(workdir, "summary.json"))}')
    return summary
  if crossval.is_repeated(config):
    result = crossval.run(config, workdir)
    if 'selection' in result:  # Leave one source out (lungjax/experiments/loso.py).
      print(f'\nleave one source out under {os.path.abspath(workdir)}: {result["selection"]["measure"]} '
            f'{result["selection"]["value"]:.4f} (held-out {result["selection"]["source"]}); table: '
            f'{os.path.abspath(os.path.join(workdir, "loso", "report.md"))}')
      return result
    print(f'\n{result["n_runs"]} runs under {os.path.abspath(workdir)}; summary: '
          f'{os.path.abspath(os.path.join(workdir, "cv" if config.cv.folds > 1 else "seeds", "report.md"))}')
    return result
  summary = train_lib.train_and_evaluate(config, workdir)
  print(f'\n{trained_line(summary)}')
  print(f'  checkpoints  {os.path.abspath(os.path.join(workdir, "checkpoints"))}')
  print(f'  curves       {os.path.abspath(os.path.join(workdir, "curves.png"))}')
  for name, result in summary['evaluations'].items():
    print(f'  {name:<12} {result["dir"]}  accuracy {result["accuracy"]:.4f}, '
          f'macro recall {result["macro_avg"]["recall"]:.4f}, macro F1 {result["macro_avg"]["f1"]:.4f}')
  print(f'  TensorBoard  tensorboard --logdir={workdir}')
  return summary


def evaluate(config: ml_collections.ConfigDict, workdir: str,
             overridden: Sequence[str] | None = None) -> dict[str, Any]:
  """--mode=eval: a checkpoint of workdir evaluated on config.eval.dir; prints the headline numbers."""
  metrics = evaluate_lib.evaluate_checkpoint(config, workdir, overridden)
  print(f'\nevaluated checkpoint step {metrics["checkpoint_step"]} on {metrics["n_images"]} images: '
        f'accuracy {metrics["accuracy"]:.4f}, macro recall {metrics["macro_avg"]["recall"]:.4f}')
  for name, row in metrics.get('per_source', {}).items():  # Several sources (--config.eval.dir=A,B).
    print(f'  {name:<12} {row["n_images"]} images: accuracy {row["accuracy"]:.4f}, recall ' + ', '.join(
        f'{c} {v["recall"]:.3f}' for c, v in row['per_class'].items() if v['support']))
  print(f'  report       {os.path.abspath(metrics["out_dir"])}/report.md')
  return metrics


def explain(config: ml_collections.ConfigDict, workdir: str,
            overridden: Sequence[str] | None = None) -> dict[str, Any]:
  """--mode=explain: Grad-CAM overlays of config.explain.dir; prints where they went."""
  summary = explain_lib.explain_folder(config, workdir, overridden)
  print(f'\nexplained {summary["n_images"]} images with Grad-CAM of {summary["layer"]} '
        f'(checkpoint step {summary["checkpoint_step"]})')
  print(f'  overlays     {summary["out_dir"]}')
  print(f'  gallery      {summary["gallery"]}')
  return summary


def shortcuts(config: ml_collections.ConfigDict, workdir: str,
              overridden: Sequence[str] | None = None) -> dict[str, Any]:
  """--mode=shortcuts: config.eval.dir scored with the lungs hidden / shown alone; prints the verdict."""
  summary = shortcuts_lib.check_shortcuts(config, workdir, overridden)
  views = summary['views']
  print(f'\nchecked checkpoint step {summary["checkpoint_step"]} on {summary["n_images"]} images: accuracy as is '
        f'{views["as_is"]["accuracy"]:.4f}, lungs hidden {views["lungs_hidden"]["accuracy"]:.4f}, '
        f'lungs only {views["lungs_only"]["accuracy"]:.4f}')
  print(f'  {summary["verdict"]["lungs_hidden_text"]}')
  print(f'  report       {summary["out_dir"]}/shortcuts.md')
  return summary


def main(argv):
  del argv
  logging.get_absl_handler().addFilter(_QuietLibraries())
  config, mode = FLAGS.config, FLAGS.mode
  config_check.validate(config, mode)  # Every field, once, before any work.
  config = run_fields.with_defaults(config)  # The one upgrade: fields the config file lacks at their defaults.
  trims = host_memory.apply(config.train)  # Before XLA's threads start and the first large allocation.
  distributed.initialize(config)  # Multi-host: joins the other processes before anything touches a device.
  workdir = FLAGS.workdir or os.path.join('workdirs', config.name)
  logging.info('%s', start_summary(config, mode, workdir))
  logging.debug('config:\n%s', config)  # All of it is in WORKDIR/config.json too.
  if mode == 'train':
    train(config, workdir)
  elif mode == 'eval':
    evaluate(config, workdir, overridden_fields())
  elif mode == 'explain':
    explain(config, workdir, overridden_fields())
  else:
    shortcuts(config, workdir, overridden_fields())
  if trims is not None:
    logging.info('host memory: freed memory handed back %d times above the %s GB cap', len(trims),
                 config.train.keep_freed_host_memory_gb)


def main_or_preempted(argv):
  """main(), except that a stop whose checkpoint was saved ends the process quietly: status 0 after SIGTERM, 130
  after SIGINT (Ctrl-C; a second Ctrl-C aborts without saving)."""
  try:
    main(argv)
  except preemption.Preempted as stopped:
    print(f'\n{stopped}', flush=True)
    return stopped.exit_code
  return 0


if __name__ == '__main__':
  import sys  # pylint: disable=g-import-not-at-top
  from lungjax import configs as packaged_configs  # pylint: disable=g-import-not-at-top
  try:
    sys.argv = packaged_configs.resolve_argv(sys.argv)  # --config=cnn: the packaged lungjax/configs/cnn.py.
  except ValueError as error:
    sys.exit(str(error))
  app.run(main_or_preempted)
