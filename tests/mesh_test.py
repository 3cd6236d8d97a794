"""mesh.py: one 'data' axis over every device in process order; batches split on it, state replicated."""

import types

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from lungjax.runtime import mesh as mesh_lib


def test_the_mesh_spans_every_device_on_one_data_axis():
  mesh = mesh_lib.make_mesh()
  assert mesh.axis_names == ('data',) and mesh.size == jax.device_count()
  assert list(mesh.devices.flat) == sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
  assert mesh_lib.replicated(mesh).spec == PartitionSpec()
  assert mesh_lib.batch_sharded(mesh).spec == PartitionSpec('data')


def test_check_batch_size_names_the_field_unless_the_batch_splits_evenly():
  four = types.SimpleNamespace(size=4)  # Only the device count matters.
  mesh_lib.check_batch_size(8, four, 'config.train.batch_size')
  for bad in (6, 0, -4):
    with pytest.raises(ValueError, match=rf'config.train.batch_size={bad} must be a positive multiple of the 4'):
      mesh_lib.check_batch_size(bad, four, 'config.train.batch_size')


def test_to_global_batch_keeps_every_key_and_value_sharded_on_the_batch_axis():
  mesh = mesh_lib.make_mesh()
  batch = {'image': np.arange(2 * jax.device_count() * 3).reshape(-1, 3), 'label': np.arange(2 * jax.device_count())}
  found = mesh_lib.to_global_batch(batch, mesh_lib.batch_sharded(mesh))
  assert sorted(found) == ['image', 'label']
  for key, value in found.items():
    assert isinstance(value, jax.Array) and value.sharding.spec == PartitionSpec('data')
    np.testing.assert_array_equal(np.asarray(value), batch[key])
