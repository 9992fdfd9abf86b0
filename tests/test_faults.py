"""Faults: two processes on one workdir, full or read-only disks, damaged checkpoints,
interrupts and kills. Each ends in one sentence (or a clean resume), never a traceback,
and leaves earlier runs and cached models byte for byte as they were."""
import fcntl
import glob
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
from unittest import mock

import ml_collections
import numpy as np
from absl.testing import absltest

from mu_jax import checkpoint, files, locks
from mu_jax.errors import MuJaxError
from mu_jax.experiments import runs
from mu_jax.experiments.results import write_results
from tests import helpers

SMOKE = 'mu_jax.configs.digits_mlp:smoke=True,methods=ft'
REQUEST = os.path.join('results', 'class-0')
EPOCHS = 2   # the smoke config's train.epochs
DEAD_PID = 2**22 + 1   # above pid_max's default: no process has it


def command(workdir: str, *flags: str, inject: str = '') -> list[str]:
  """`mu-jax benchmark` of the smoke config, after running `inject` (a fault) in the process."""
  argv = ['mu-jax', 'benchmark', f'--config={SMOKE}', f'--workdir={workdir}', *flags]
  script = f'{textwrap.dedent(inject)}\nimport sys\nsys.argv = {argv!r}\n' \
           'from mu_jax.commands import main\nmain()\n'
  return [sys.executable, '-c', script]


def run(cmd: list[str]) -> subprocess.CompletedProcess:
  return subprocess.run(cmd, cwd=helpers.ROOT, capture_output=True, text=True, timeout=600,
                        env=_env())


def _env() -> dict:
  return dict(os.environ, JAX_PLATFORMS='cpu', TQDM_DISABLE='1')


def snapshot(directory: str) -> dict[str, bytes]:
  """Every file's bytes (a link's target) under `directory`, by relative path; the
  compilation cache `xla_cache/` aside (a failed command may add executables to it)."""
  out = {}
  for root, dirs, names in os.walk(directory):
    if root == directory and 'xla_cache' in dirs:
      dirs.remove('xla_cache')
    for name in names + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
      path = os.path.join(root, name)
      rel = os.path.relpath(path, directory)
      if os.path.islink(path):
        out[rel] = os.readlink(path).encode()
      else:
        with open(path, 'rb') as f:
          out[rel] = f.read()
  return out


def temporaries(directory: str) -> list[str]:
  """What an unfinished write leaves: temporary files and folders, partial runs, half links."""
  found = []
  for root, dirs, names in os.walk(directory):
    for name in dirs + names:
      if (name.endswith(('.tmp', '.partial')) or checkpoint.ORBAX_TMP in name
          or name.startswith(f'.{runs.LATEST}.')):
        found.append(os.path.relpath(os.path.join(root, name), directory))
  return found


def finished_runs(workdir: str) -> list[str]:
  request = os.path.join(workdir, REQUEST)
  return sorted(e for e in os.listdir(request) if not e.startswith('.') and e != runs.LATEST)


def rows(run_dir: str) -> list[tuple]:
  """The method and metrics of each row (not its timings)."""
  with open(os.path.join(run_dir, 'results.json')) as f:
    table = json.load(f)['rows']
  return [tuple(row.get(k) for k in ('method', 'FA', 'UA', 'RA', 'TA', 'MIA', 'Avg. Gap'))
          for row in table]


class CachedWorkdirTest(absltest.TestCase):
  """Two benchmarks started at once on one fresh workdir; the other tests copy its result."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.base = tempfile.mkdtemp(prefix='faults-')
    cls.workdir = os.path.join(cls.base, 'w')
    procs = [subprocess.Popen(command(cls.workdir), cwd=helpers.ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=_env()) for _ in range(2)]
    cls.outcomes = [(p.wait(timeout=600), p.stdout.read(), p.stderr.read()) for p in procs]
    for p in procs:
      p.stdout.close()
      p.stderr.close()

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.base, ignore_errors=True)
    super().tearDownClass()

  def copy(self) -> str:
    """A private copy of the cached workdir (models and the two runs)."""
    if any(code for code, _, _ in self.outcomes):
      self.skipTest('the concurrent benchmarks failed (see their test)')
    target = os.path.join(self.create_tempdir().full_path, 'w')
    shutil.copytree(self.workdir, target, symlinks=True)
    return target

  def assertOneError(self, proc, text: str, code: int = 1):
    """Exit `code`, no traceback, and one `error:` line on stderr, its last, holding `text`."""
    self.assertEqual(proc.returncode, code, proc.stderr[-3000:])
    self.assertNotIn('Traceback', proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if line.startswith('error:')]
    self.assertLen(errors, 1, proc.stderr[-3000:])
    self.assertEqual(proc.stderr.rstrip().splitlines()[-1], errors[0])
    self.assertIn(text, errors[0])
    return errors[0]

  def test_two_processes_on_one_fresh_workdir_train_each_model_once(self):
    for code, _, err in self.outcomes:
      self.assertEqual(code, 0, err[-3000:])
    runs_made = finished_runs(self.workdir)
    self.assertLen(runs_made, 2)
    models = sorted(os.listdir(os.path.join(self.workdir, 'models')))
    roles = [m.split('-')[0] for m in models if not m.endswith(locks.SUFFIX)]
    self.assertEqual(sorted(roles), ['oracle', 'original'])
    for model in models:
      if not model.endswith(locks.SUFFIX):
        steps = [s for s in os.listdir(os.path.join(self.workdir, 'models', model))
                 if s.isdigit()]
        self.assertEqual(steps, [str(EPOCHS)])
    # Each model is trained by one process only; the other waits, then loads it.
    logs = ''.join(err for _, _, err in self.outcomes)
    for role in ('original', 'oracle'):
      self.assertEqual(logs.count(f'{role} epoch {EPOCHS}/{EPOCHS}:'), 1, role)
    request = os.path.join(self.workdir, REQUEST)
    self.assertEqual(rows(os.path.join(request, runs_made[0])),
                     rows(os.path.join(request, runs_made[1])))
    self.assertEqual(temporaries(self.workdir), [])

  def test_a_read_only_workdir_with_cached_models_fails_in_one_sentence(self):
    workdir = self.copy()
    before = snapshot(workdir)
    proc = run(command(workdir, inject=read_only(workdir)))
    self.assertOneError(proc, 'read-only file system; pass a writable --workdir')
    self.assertEqual(snapshot(workdir), before)

  def test_a_full_disk_while_writing_results_keeps_every_earlier_run(self):
    workdir = self.copy()
    before = snapshot(workdir)
    inject = '''
        import errno, os
        def fsync(fd):
          raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        os.fsync = fsync
        '''
    proc = run(command(workdir, inject=inject))
    line = self.assertOneError(proc, 'No space left on ')
    self.assertIn('; free space and rerun (completed checkpoints are kept).', line)
    self.assertEqual(snapshot(workdir), before)

  def test_a_damaged_checkpoint_is_refused_then_discarded_with_the_flag(self):
    workdir = self.copy()
    [step] = glob.glob(os.path.join(workdir, 'models', 'original-*', str(EPOCHS)))
    truncate_arrays(step)
    before = snapshot(workdir)
    proc = run(command(workdir))
    self.assertOneError(proc, f'The checkpoint {step} is damaged')
    self.assertIn('--discard_damaged', proc.stderr)
    self.assertEqual(snapshot(workdir), before)   # never loaded, never deleted unasked

    proc = run(command(workdir, '--discard_damaged'))
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertIn(f'original epoch {EPOCHS}/{EPOCHS}:', proc.stderr)   # retrained
    request = os.path.join(workdir, REQUEST)
    self.assertEqual(rows(runs.latest(request)),
                     rows(os.path.join(request, finished_runs(workdir)[0])))
    self.assertEqual(temporaries(workdir), [])

  def test_a_run_killed_between_two_writes_is_replaced_by_the_rerun(self):
    workdir = self.copy()
    earlier = finished_runs(workdir)
    before = {run_name: snapshot(os.path.join(workdir, REQUEST, run_name))
              for run_name in earlier}
    inject = '''
        import os, signal
        from mu_jax import files
        real = files.atomic_write
        def atomic_write(path, content):
          real(path, content)
          if '.partial' in path:   # the first file of the run folder is written: kill -9
            os.kill(os.getpid(), signal.SIGKILL)
        files.atomic_write = atomic_write
        '''
    proc = run(command(workdir, inject=inject))
    self.assertEqual(proc.returncode, -signal.SIGKILL)
    self.assertEqual(finished_runs(workdir), earlier)   # a killed run is no run
    proc = run(command(workdir))
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    now = finished_runs(workdir)
    self.assertLen(now, len(earlier) + 1)
    self.assertEqual(runs.latest(os.path.join(workdir, REQUEST)),
                     os.path.join(workdir, REQUEST, now[-1]))
    for run_name in earlier:
      self.assertEqual(snapshot(os.path.join(workdir, REQUEST, run_name)), before[run_name])
    self.assertEqual(temporaries(workdir), [])


def truncate_arrays(step_dir: str) -> None:
  """Cuts every array file of a checkpoint step in half, as a full disk or a bad copy does."""
  paths = glob.glob(os.path.join(step_dir, 'state', '**', 'd', '*'), recursive=True)
  assert paths, step_dir
  for path in paths:
    os.truncate(path, os.path.getsize(path) // 2)


def read_only(root: str) -> str:
  """Code that makes every write under `root` fail as on a read-only file system."""
  return f'''
      import errno, os
      ROOT = {os.path.abspath(root)!r}
      def refuse(path):
        if os.path.abspath(os.fsdecode(path)).startswith(ROOT):
          raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))
      real_open, real_mkdir = os.open, os.mkdir
      def open_(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
          refuse(path)
        return real_open(path, flags, *args, **kwargs)
      def mkdir(path, *args, **kwargs):
        if not os.path.exists(path):
          refuse(path)
        return real_mkdir(path, *args, **kwargs)
      os.open, os.mkdir = open_, mkdir
      '''


class WorkdirTest(absltest.TestCase):
  """Faults found before any work: the command fails at once."""

  def test_a_workdir_that_is_a_file_fails_in_one_sentence(self):
    path = self.create_tempfile('w', content='mine').full_path
    proc = run(command(path))
    CachedWorkdirTest.assertOneError(self, proc, f'The workdir {path} is a file')
    with open(path) as f:
      self.assertEqual(f.read(), 'mine')

  def test_a_new_workdir_on_a_read_only_file_system_fails_in_one_sentence(self):
    parent = self.create_tempdir().full_path
    workdir = os.path.join(parent, 'w')
    proc = run(command(workdir, inject=read_only(parent)))
    CachedWorkdirTest.assertOneError(self, proc, 'read-only file system')
    self.assertEqual(os.listdir(parent), [])


def interrupted(request: str, signum: int) -> subprocess.CompletedProcess:
  """A command that receives `signum` while its run folder is being written."""
  script = textwrap.dedent(f'''
      import os, signal, sys, time, ml_collections
      # As a command started from a terminal: a runner started in the background
      # (bash's `&`) passes SIGINT down ignored, and Python then keeps it so.
      signal.signal(signal.SIGINT, signal.default_int_handler)
      signal.pthread_sigmask(signal.SIG_UNBLOCK, {{signal.SIGINT, signal.SIGTERM}})
      from mu_jax.commands import cli
      from mu_jax.experiments import runs
      def main():
        with runs.new_run({request!r}, ml_collections.ConfigDict({{'seed': 0}})) as run:
          open(os.path.join(run.path, 'results.md'), 'w').close()
          os.kill(os.getpid(), {int(signum)})
          time.sleep(30)   # the handler runs here at the latest (another thread may take it)
          raise AssertionError('the signal did not stop the command')
      sys.argv = ['mu-jax report']
      cli.run(main, needs_config=False)
      ''')
  return run([sys.executable, '-c', script])


class InterruptTest(absltest.TestCase):

  def test_ctrl_c_prints_one_line_exits_130_and_leaves_no_partial_run(self):
    request = self.create_tempdir().full_path
    proc = interrupted(request, signal.SIGINT)
    self.assertEqual(proc.returncode, 130, proc.stderr[-3000:])
    self.assertNotIn('Traceback', proc.stderr)
    self.assertEqual(proc.stderr.rstrip().splitlines()[-1],
                     'interrupted; rerun the same command to resume')
    self.assertEqual([e for e in os.listdir(request) if not e.endswith(locks.SUFFIX)], [])

  def test_sigterm_prints_one_line_exits_143_and_leaves_no_partial_run(self):
    request = self.create_tempdir().full_path
    proc = interrupted(request, signal.SIGTERM)
    self.assertEqual(proc.returncode, 143, proc.stderr[-3000:])
    self.assertNotIn('Traceback', proc.stderr)
    self.assertEqual(proc.stderr.rstrip().splitlines()[-1],
                     'terminated; rerun the same command to resume')
    self.assertEqual([e for e in os.listdir(request) if not e.endswith(locks.SUFFIX)], [])


KILL_AT_EVERY_STEP = '''
import json, os, signal, sys
import ml_collections
from mu_jax.experiments import runs
request, outcomes = sys.argv[1], []
for k in range(100):
  pid = os.fork()
  if pid == 0:   # counts the file-system changes of one run; the k-th is never made
    count = [0]
    def killing(real):
      def call(*args, **kwargs):
        count[0] += 1
        if count[0] > k:
          os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
      return call
    for name in ('mkdir', 'rename', 'replace', 'symlink', 'remove', 'rmdir', 'unlink', 'open'):
      setattr(os, name, killing(getattr(os, name)))
    with runs.new_run(request, ml_collections.ConfigDict({'seed': 0})) as run:
      with open(os.path.join(run.path, 'results.json'), 'w') as f:
        f.write(json.dumps({'k': k}))
    os._exit(0)
  _, status = os.waitpid(pid, 0)
  entries = sorted(os.listdir(request))
  link = os.path.join(request, runs.LATEST)
  outcomes.append({'k': k, 'killed': status != 0, 'entries': entries,
                   'latest': os.path.realpath(link) if os.path.lexists(link) else None})
  if status == 0:
    break
print(json.dumps(outcomes))
'''


class KillTest(absltest.TestCase):

  def test_a_run_killed_at_any_step_leaves_a_whole_run_or_none(self):
    request = self.create_tempdir().full_path
    proc = run([sys.executable, '-c', KILL_AT_EVERY_STEP, request])
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    outcomes = json.loads(proc.stdout)
    self.assertGreater(len(outcomes), 3)
    self.assertTrue(all(o['killed'] for o in outcomes[:-1]))
    self.assertFalse(outcomes[-1]['killed'])
    for outcome in outcomes:
      for entry in outcome['entries']:
        if not entry.startswith('.') and entry != runs.LATEST:   # a finished run is whole
          self.assertTrue(os.path.exists(os.path.join(request, entry, 'results.json')),
                          (outcome['k'], entry))
      if outcome['latest'] is not None:
        self.assertTrue(os.path.exists(os.path.join(outcome['latest'], 'results.json')))
    with runs.new_run(request, ml_collections.ConfigDict({'seed': 0})) as last:
      with open(os.path.join(last.path, 'results.json'), 'w') as f:
        f.write('{}')
    self.assertEqual(temporaries(request), [])
    self.assertEqual(runs.latest(request), last.path)


class CheckpointFaultTest(absltest.TestCase):
  STATE = {'w': np.arange(12, dtype=np.float32).reshape(3, 4), 'b': np.ones(4, np.float32)}

  def saved_store(self, steps=(1,)) -> str:
    directory = os.path.join(self.create_tempdir().full_path, 'original-0123')
    store = checkpoint.CheckpointStore(directory)
    for step in steps:
      store.save(step, self.STATE, {'epoch': step})
    store.close()
    return directory

  def test_a_store_holds_its_lock_until_closed(self):
    directory = os.path.join(self.create_tempdir().full_path, 'm')
    store = checkpoint.CheckpointStore(directory)
    fd = os.open(directory + locks.SUFFIX, os.O_RDWR)
    try:
      with self.assertRaises(BlockingIOError):
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      store.close()
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)   # free once closed
      self.assertFalse(os.path.exists(directory + locks.SUFFIX))   # and no file left
    finally:
      os.close(fd)

  def test_truncated_arrays_are_refused_and_discarded_on_request(self):
    directory = self.saved_store()
    truncate_arrays(os.path.join(directory, '1'))
    self.assert_refused_then_discarded(directory)

  def test_garbled_metadata_is_refused_and_discarded_on_request(self):
    directory = self.saved_store()
    with open(os.path.join(directory, '1', 'meta', 'metadata'), 'w') as f:
      f.write('{"epoch": 1, "sha')
    self.assert_refused_then_discarded(directory)

  def assert_refused_then_discarded(self, directory: str):
    store = checkpoint.CheckpointStore(directory)
    try:
      with self.assertRaisesRegex(MuJaxError, f'^The checkpoint {directory}/1 is damaged '):
        store.restore_latest(self.STATE)
      self.assertTrue(os.path.isdir(os.path.join(directory, '1')))
      with checkpoint.discarding_damaged():
        self.assertIsNone(store.restore_latest(self.STATE))
      self.assertFalse(os.path.exists(os.path.join(directory, '1')))
      store.save(1, self.STATE, {'epoch': 1})   # made again
      restored, meta = store.restore_latest(self.STATE)
    finally:
      store.close()
    np.testing.assert_array_equal(restored['w'], self.STATE['w'])
    self.assertEqual(meta['epoch'], 1)

  def test_garbled_statistics_are_refused_and_discarded_on_request(self):
    directory = os.path.join(self.create_tempdir().full_path, 'statistics', 'ssd-0123')
    checkpoint.save_tree(directory, self.STATE)
    with open(os.path.join(directory, '_METADATA'), 'w') as f:
      f.write('{"tree_metadata": {')
    with self.assertRaisesRegex(MuJaxError, f'^The checkpoint {directory} is damaged '):
      checkpoint.load_tree(directory)
    with checkpoint.discarding_damaged():
      self.assertIsNone(checkpoint.load_tree(directory))
    self.assertFalse(os.path.exists(directory))

  def test_a_full_disk_during_a_checkpoint_keeps_the_last_one(self):
    directory = self.saved_store()
    store = checkpoint.CheckpointStore(directory)
    full = ValueError('RESOURCE_EXHAUSTED: Error writing "params.w/0" in OCDBT database: '
                      "Failed to write 344 bytes: No space left on device [os_error_code='28']")
    try:
      with mock.patch.object(store._manager, 'save', side_effect=full):
        with self.assertRaisesRegex(MuJaxError, f'^No space left on {directory} while writing '
                                    r'the checkpoint of step 2; free space and rerun '
                                    r'\(completed checkpoints are kept\)\.$'):
          store.save(2, self.STATE, {'epoch': 2})
      _, meta = store.restore_latest(self.STATE)
    finally:
      store.close()
    self.assertEqual(meta['epoch'], 1)

  def test_too_little_free_space_is_found_before_writing(self):
    directory = self.saved_store()
    before = snapshot(directory)
    small = os.statvfs_result((4096, 4096, 100, 1, 1, 100, 1, 1, 0, 255))   # 4 KiB free
    store = checkpoint.CheckpointStore(directory)
    try:
      big = {'w': np.zeros((1024, 1024), np.float32)}
      with mock.patch.object(os, 'statvfs', return_value=small):
        with self.assertRaisesRegex(MuJaxError, '^No space left on '):
          store.save(2, big, {'epoch': 2})
    finally:
      store.close()
    self.assertEqual(snapshot(directory), before)

  def test_temporary_folders_of_killed_saves_are_removed_by_the_next_user(self):
    directory = self.saved_store()
    os.makedirs(os.path.join(directory, '2' + checkpoint.ORBAX_TMP, 'state'))
    checkpoint.CheckpointStore(directory).close()
    self.assertEqual(sorted(os.listdir(directory)), ['1'])
    stats = os.path.join(os.path.dirname(directory), 'statistics', 'acu_0123')
    checkpoint.save_tree(stats, self.STATE)
    leftover = stats + checkpoint.ORBAX_TMP + '-1767225600'
    os.makedirs(os.path.join(leftover, 'd'))
    np.testing.assert_array_equal(checkpoint.load_tree(stats)['w'], self.STATE['w'])
    self.assertFalse(os.path.exists(leftover))


class ResultsFileTest(absltest.TestCase):

  def test_a_directory_in_place_of_results_json_fails_in_one_sentence(self):
    directory = self.create_tempdir().full_path
    os.makedirs(os.path.join(directory, 'results.json', 'mine'))
    with self.assertRaisesRegex(MuJaxError, f'^Cannot write results.json: {directory}/results.json '
                                'is a directory; move it away and rerun.$'):
      write_results([{'method': 'ft', 'UA': 1.0}], directory)
    self.assertTrue(os.path.isdir(os.path.join(directory, 'results.json', 'mine')))
    self.assertEqual(temporaries(directory), [])

  def test_temporary_files_of_dead_processes_are_removed_by_the_next_write(self):
    directory = self.create_tempdir().full_path
    dead = os.path.join(directory, f'.results.json.{DEAD_PID}.k2j3.tmp')
    live = os.path.join(directory, f'.results.json.{os.getpid()}.x9q1.tmp')
    for path in (dead, live):
      open(path, 'w').close()
    files.atomic_write(os.path.join(directory, 'results.json'), '{}')
    self.assertFalse(os.path.exists(dead))
    self.assertTrue(os.path.exists(live))   # a live writer's file is left alone

  def test_results_files_are_world_readable(self):
    directory = self.create_tempdir().full_path
    old = os.umask(0o022)
    try:
      write_results([{'method': 'ft', 'UA': 1.0}], directory)
    finally:
      os.umask(old)
    for name in ('results.md', 'results.csv', 'results.json'):
      mode = stat.S_IMODE(os.stat(os.path.join(directory, name)).st_mode)
      self.assertEqual(mode, 0o644, name)

  def test_a_stale_latest_link_of_a_killed_run_is_removed(self):
    request = self.create_tempdir().full_path
    stale = os.path.join(request, f'.{runs.LATEST}.{DEAD_PID}')
    os.symlink('20260101-000000-abcdef12', stale)
    with runs.new_run(request, ml_collections.ConfigDict({'seed': 0})):
      pass
    self.assertFalse(os.path.lexists(stale))


if __name__ == '__main__':
  absltest.main()
