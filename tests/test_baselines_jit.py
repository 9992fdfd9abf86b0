"""Every new baseline gives the same model with and without jit, and on 1 or 8 devices."""
import jax
from absl.testing import absltest, parameterized

from tests import helpers
from mu_jax import sharding
from mu_jax.data import Examples
from mu_jax.methods import Context, create_method, run_method
from mu_jax.methods.base import epoch_stream
from tests import test_methods as tm
from tests.test_train import assert_trees_close

SMALL = {
    'salun': dict(batch_size=32, learning_rate=0.05),
    'l1_sparse': dict(batch_size=32, alpha=0.01),
    'npo': dict(batch_size=32, learning_rate=0.01),
    'scrub': dict(forget_batch_size=32, retain_batch_size=32, learning_rate=0.05),
    # Forget rows only: on retain rows the student starts at its teacher, where the KL
    # gradient is float noise that Adam scales up to steps of size ~lr.
    'bad_teacher': dict(batch_size=32, learning_rate=0.01, retain_fraction=0.0),
    'boundary_shrink': dict(batch_size=32, learning_rate=0.05),
    'boundary_expand': dict(batch_size=32, learning_rate=0.05),
    'smooth': dict(method='npo', rho=0.1,
                   overrides=dict(batch_size=32, learning_rate=0.01, epochs=1)),
}


def small(name):
  hparams = SMALL[name] if name == 'smooth' else {'epochs': 1, **SMALL[name]}
  return create_method(name, **hparams)


def context(mesh_spec='data:1'):
  """32 forget and 64 retain rows of the shared setting: few steps, eager runs stay quick."""
  s = tm.setting()
  return Context(helpers.classifier(s['model'], s['forget']), Examples(x=s['forget']['x'][:32], y=s['forget']['y'][:32]),
                 Examples(x=s['retain']['x'][:64], y=s['retain']['y'][:64]), sharding.make_mesh(mesh_spec))


class JitTest(parameterized.TestCase):

  @parameterized.parameters(*SMALL)
  def test_jit_matches_eager(self, name):
    method, ctx, variables = small(name), context(), tm.setting()['variables']
    jitted = run_method(method, variables, ctx)
    state = method.prepare(ctx, variables)
    with jax.disable_jit():
      for epoch in range(method.stream.epochs):
        for batch in epoch_stream(method, ctx, epoch):
          state, _ = method.update(ctx.task, state, batch)
    assert_trees_close(method.result(state), jitted.variables, rtol=1e-5, atol=1e-6)

  @parameterized.parameters('npo', 'scrub')
  def test_eight_devices_match_one(self, name):
    method, variables = small(name), tm.setting()['variables']
    one = run_method(method, variables, context('data:1'))
    eight = run_method(method, variables, context('data:8'))
    assert_trees_close(one.variables, eight.variables, rtol=1e-5, atol=1e-6)


if __name__ == '__main__':
  absltest.main()
