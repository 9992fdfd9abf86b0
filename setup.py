"""mu_jax: pure-function machine unlearning in JAX/Flax.

Dependency ranges here (Colab and clusters bring their own JAX); the exact
versions the test suite runs against are in constraints.txt, which
`make setup` applies: pip install -c constraints.txt -e '.[test]'. Each lower
bound is the lowest version the tests pass with: constraints-lowest.txt pins
them all.
"""
from setuptools import find_packages, setup

setup(
    name='mu_jax',
    version='0.1.0',
    description='Machine unlearning as pure, compiled JAX functions, '
                'measured against the retrained oracle.',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mu_jax', 'mu_jax.*']),
    python_requires='>=3.11',
    install_requires=[
        'jax>=0.8.1',                # @jax.jit(static_argnums=...) decorator factory
        'flax>=0.10',
        'optax>=0.2.4',
        'orbax-checkpoint>=0.11.22',  # metadata().item_metadata; Layout API of jax>=0.7
        'tensorflow-datasets>=4.9.10',  # no TensorFlow on a missing data set; protobuf 7
        'array_record>=0.5',         # tfds' ArrayRecord files (tfds.testing.mock_data)
        'ml_collections>=1.0',
        'chex>=0.1.90',
        'absl-py>=2.1',
        'numpy>=2.0',                # jax>=0.8.1 needs it
        'scipy>=1.13',
        'scikit-learn>=1.5',
        'matplotlib>=3.8.4',         # first without numpy<2
        'tqdm>=4.66',
        'tensorboard>=2.17.1',       # event files without TensorFlow; numpy 2
        'sentencepiece>=0.2.0',      # the LM benchmark's BPE tokenizer (trained offline)
        'rouge-score>=0.1.2',        # ROUGE-L as TOFU and MUSE score it
    ],
    extras_require={
        'test': [
            'pytest>=8',
            'pytest-xdist>=3.5',
            'nbclient>=0.10',
            'nbformat>=5.10',
            'ipykernel>=6.29',
        ],
        # benchmarks/compare_official.py and lm_perf.py: the PyTorch code users run, beside mu_jax
        'compare': [
            'torch>=2.13',               # the CPU build the comparisons were run with
            'transformers>=5.24',        # LlamaConfig(rope_parameters=...): the HF loop of lm_perf
        ],
        # mu_jax.models.gemma: Gemma models of the `gemma` package (brings TensorFlow
        # through kauldron); constraints-gemma.txt pins a set that installs (docs/gemma.md).
        'gemma': [
            'gemma>=3.3.0',              # the gm.nn.Transformer / gm.text API the adapter wraps
        ],
    },
    entry_points={'console_scripts': ['mu-jax=mu_jax.commands:main']},
)
