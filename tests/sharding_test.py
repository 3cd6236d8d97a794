"""Data parallelism: train steps on 4 (forced host) devices give the same loss and params as on 1."""

import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SCRIPT = textwrap.dedent('''
    import jax, numpy as np
    from jax.sharding import Mesh
    from configs import tiny
    from lungjax import steps
    from lungjax.runtime import mesh as mesh_lib
    from lungjax.models import create_model
    assert jax.device_count() == 4, jax.devices()
    config = tiny.get_config()
    model = create_model(config.model, 3)
    tx = steps.create_optimizer(config.train)
    rng = np.random.default_rng(0)
    batches = [{'image': rng.integers(0, 256, (8, 32, 32, 3), np.uint8),
                'label': rng.integers(0, 3, 8).astype(np.int32)} for _ in range(3)]
    results = {}
    for n in (1, 4):
      mesh = Mesh(np.asarray(jax.devices()[:n]), ('data',))
      state = steps.jit_create_train_state(model, tx, 32, mesh)(jax.random.PRNGKey(0))
      train_step = steps.jit_train_step(model, tx, np.array([0.75, 1.2, 1.2], np.float32), mesh)
      losses = []
      for batch in batches:
        batch = mesh_lib.to_global_batch(batch, mesh_lib.batch_sharded(mesh))
        assert len(batch['image'].sharding.device_set) == n
        state, metrics = train_step(state, batch)
        losses.append(float(metrics.compute()['loss']))
      results[n] = (losses, jax.device_get(state.params))
    np.testing.assert_allclose(results[4][0], results[1][0], atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), results[4][1], results[1][1])
    print('losses', results[1][0], results[4][0])
''')


def test_four_devices_match_one_device():
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4', JAX_PLATFORMS='cpu',
             PYTHONPATH=REPO)
  result = subprocess.run([sys.executable, '-c', _SCRIPT], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'losses' in result.stdout


_SHARDS_SCRIPT = textwrap.dedent('''
    import jax, numpy as np
    from configs import tiny
    from lungjax import steps
    from lungjax.runtime import mesh as mesh_lib
    from lungjax.models import create_model
    assert jax.device_count() == 4, jax.devices()
    mesh = mesh_lib.make_mesh()
    rows = np.arange(8, dtype=np.uint8)
    # Row i holds i everywhere, its label too.
    batch = {'image': rows[:, None, None, None] * np.ones((1, 32, 32, 3), np.uint8), 'label': rows.astype(np.int32)}
    batch = mesh_lib.to_global_batch(batch, mesh_lib.batch_sharded(mesh))
    for name, array in batch.items():
      assert array.sharding.shard_shape(array.shape)[0] == 2, (name, array.sharding)
      assert len(array.addressable_shards) == 4, (name, array.sharding)
      held = []
      for shard in array.addressable_shards:  # Each device holds its own 2 of the 8 rows, and only them.
        assert shard.data.shape[0] == 2, (name, shard.device, shard.data.shape)
        held += np.asarray(shard.data).reshape(2, -1)[:, 0].tolist()
      assert sorted(held) == list(range(8)), (name, held)
    config = tiny.get_config()
    model = create_model(config.model, 3)
    tx = steps.create_optimizer(config.train)
    state = steps.jit_create_train_state(model, tx, 32, mesh)(jax.random.PRNGKey(0))
    probabilities = steps.jit_eval_step(model, mesh)(state, batch)
    assert [s.data.shape for s in probabilities.addressable_shards] == [(2, 3)] * 4, probabilities.sharding
    print('batch split over', mesh.size, 'devices')
''')


def test_every_device_holds_only_its_slice_of_the_batch():
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4', JAX_PLATFORMS='cpu',
             PYTHONPATH=REPO)
  result = subprocess.run([sys.executable, '-c', _SHARDS_SCRIPT], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'batch split over 4 devices' in result.stdout
