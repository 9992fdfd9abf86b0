"""mu_jax: pure-function machine unlearning in JAX/Flax."""
from setuptools import find_packages, setup

setup(
    name='mu_jax',
    version='0.1.0',
    description='Machine unlearning as pure, compiled JAX functions, '
                'measured against the retrained oracle.',
    packages=find_packages(include=['mu_jax', 'mu_jax.*']),
    python_requires='>=3.11',
    install_requires=[
        'jax==0.10.2',
        'jaxlib==0.10.2',
        'flax==0.12.8',
        'optax==0.2.8',
        'orbax-checkpoint==0.12.8',
        'tensorflow-datasets==4.9.10',
        'array_record==0.8.6',
        'ml_collections==1.1.0',
        'chex==0.1.92',
        'absl-py==2.5.1',
        'numpy==2.4.6',
        'scipy==1.17.1',
        'scikit-learn==1.9.1',
        'matplotlib==3.11.2',
        'tqdm==4.70.1',
    ],
    extras_require={
        'test': [
            'pytest==9.2.0',
            'pytest-xdist==3.8.0',
            'nbclient==0.11.0',
            'nbformat==5.11.1',
            'ipykernel==7.4.0',
        ],
    },
)
