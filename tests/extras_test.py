"""data/extras.py: a missing module of the [prepare] extra fails with an error naming what needed it and the extra."""

import sys

import pytest

from lungjax.data import extras, loading


def test_a_missing_prepare_module_names_the_caller_the_module_and_the_extra(monkeypatch):
  monkeypatch.setitem(sys.modules, 'array_record', None)  # As if not installed: importing it raises ImportError.
  with pytest.raises(ModuleNotFoundError) as raised:
    extras.require_prepare_extra('the thing')
  message = str(raised.value)
  assert message.startswith('the thing needs the [prepare] extra') and "pip install 'lungjax[prepare]'" in message
  assert '(array_record missing)' in message


def test_every_missing_module_is_listed_and_an_installed_extra_passes(monkeypatch):
  for name in extras.PREPARE_EXTRA_MODULES:
    monkeypatch.setitem(sys.modules, name, sys)  # Any importable module object: "installed".
  extras.require_prepare_extra('x')
  for name in extras.PREPARE_EXTRA_MODULES:
    monkeypatch.setitem(sys.modules, name, None)
  with pytest.raises(ModuleNotFoundError, match=r'\(tensorflow_datasets, array_record missing\)'):
    loading.require_prepare_extra('x')  # loading re-exports it: config_check calls it there.
