"""mu_jax: pure-function machine unlearning in JAX/Flax.

Dependency ranges here (Colab and clusters bring their own JAX); the exact
versions the test suite runs against are in constraints.txt, which
`make setup` applies: pip install -c constraints.txt -e '.[test]'.
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
        'jax>=0.7',                  # jax.shard_map, jax.make_mesh
        'flax>=0.10',
        'optax>=0.2.4',
        'orbax-checkpoint>=0.11',
        'tensorflow-datasets>=4.9.7',
        'array_record>=0.5',         # tfds' ArrayRecord files (tfds.testing.mock_data)
        'ml_collections>=1.0',
        'chex>=0.1.90',
        'absl-py>=2.1',
        'numpy>=1.26',
        'scipy>=1.13',
        'scikit-learn>=1.5',
        'matplotlib>=3.8',
        'tqdm>=4.66',
        'tensorboard>=2.14',         # event files of the loss curves, without TensorFlow
    ],
    extras_require={
        'test': [
            'pytest>=8',
            'pytest-xdist>=3.5',
            'nbclient>=0.10',
            'nbformat>=5.10',
            'ipykernel>=6.29',
        ],
    },
    entry_points={'console_scripts': ['mu-jax=mu_jax.commands:main']},
)
