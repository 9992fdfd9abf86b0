"""The Hugging Face side of `lm_perf.py`: mu_jax's transformer as a transformers
`LlamaForCausalLM`, its weights carried over exactly, and the steps that
open-unlearning's trainers take, run on request in a worker process.

Layouts: Flax kernels are [in, out], torch Linear weights [out, in], so every
kernel is transposed; embeddings and norm scales carry over as they are. Both
models rotate q and k in the half-split layout (pair (i, i + D/2), HF's
`rotate_half`) at the frequencies base^(-2i/D), so q and k need no permutation
(the logits agree, checked every run).

The steps follow open-unlearning (github.com/locuslab/open-unlearning):
  train     the HF Trainer's step: `model(**inputs).loss`, backward, AdamW step,
            zero_grad;
  ascent    `GradAscent`: the same with the loss negated;
  npo       `NPO`'s forget term, `compute_dpo_loss` with lose_inputs only:
            −(2/β)·mean logsigmoid(−β·(nll_ref − nll)) on the per-sequence NLL
            sums of `compute_batch_nll`, the reference's under torch.no_grad;
  evaluate  `evaluate_probability`: a forward under no_grad, per-token
            cross-entropy (reduction='none') summed per sequence.
Inputs are what its collator gives: input_ids, attention_mask, labels (-100 on
unscored positions).
"""
import copy
import json
import time

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from flax.traverse_util import unflatten_dict
from transformers import LlamaConfig, LlamaForCausalLM

from mu_jax.models.transformer import TransformerConfig

import workers

IGNORE_INDEX = -100   # open-unlearning data/utils.py
NPO_BETA = 0.1        # the NPO paper's β; open-unlearning configs/trainer/NPO.yaml
LINEARS = {'attn': {'q': 'self_attn.q_proj', 'k': 'self_attn.k_proj',
                    'v': 'self_attn.v_proj', 'o': 'self_attn.o_proj'},
           'mlp': {'gate': 'mlp.gate_proj', 'up': 'mlp.up_proj', 'down': 'mlp.down_proj'}}


def llama_config(cfg) -> LlamaConfig:
  """The LlamaConfig of a mu_jax `TransformerConfig` (untied, no biases, same norms and RoPE)."""
  return LlamaConfig(
      vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
      num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
      num_key_value_heads=cfg.num_heads, max_position_embeddings=cfg.max_len,
      rms_norm_eps=1e-6, rope_parameters={'rope_type': 'default', 'rope_theta': cfg.rope_base},
      tie_word_embeddings=cfg.tied_embeddings, attention_bias=False, mlp_bias=False,
      attn_implementation='sdpa')


def hf_state(params) -> dict[str, np.ndarray]:
  """mu_jax transformer params -> a `LlamaForCausalLM` state dict (numpy float32)."""
  state = {'model.embed_tokens.weight': params['embed']['embedding'],
           'model.norm.weight': params['norm']['scale'],
           'lm_head.weight': np.asarray(params['head']['kernel']).T}
  blocks = sorted((k for k in params if k.startswith('block_')), key=lambda k: int(k[6:]))
  for i, name in enumerate(blocks):
    block, prefix = params[name], f'model.layers.{i}.'
    state[prefix + 'input_layernorm.weight'] = block['attn_norm']['scale']
    state[prefix + 'post_attention_layernorm.weight'] = block['mlp_norm']['scale']
    for part, linears in LINEARS.items():
      for ours, theirs in linears.items():
        state[prefix + theirs + '.weight'] = np.asarray(block[part][ours]['kernel']).T
  return {k: np.array(v, np.float32, order='C') for k, v in state.items()}


def to_hf(variables, model: LlamaForCausalLM) -> LlamaForCausalLM:
  """Loads mu_jax `variables` into `model` (every weight, strictly); returns it."""
  model.load_state_dict({k: torch.from_numpy(v) for k, v in hf_state(variables['params']).items()},
                        strict=True)
  return model


def inputs_of(x: np.ndarray, m: np.ndarray) -> dict[str, torch.Tensor]:
  """open-unlearning's batch of tokens x [N, L] scored where m [N, L] > 0."""
  ids = torch.from_numpy(np.asarray(x, np.int64))
  return {'input_ids': ids, 'attention_mask': torch.ones_like(ids),
          'labels': torch.where(torch.from_numpy(np.asarray(m)) > 0, ids, IGNORE_INDEX)}


def batch_nll(model, inputs) -> torch.Tensor:
  """Per-sequence NLL sums [N] (open-unlearning `compute_batch_nll`)."""
  logits = model(**inputs).logits[..., :-1, :].contiguous()
  labels = inputs['labels'][..., 1:].contiguous()
  return F.cross_entropy(logits.transpose(-1, -2), labels, ignore_index=IGNORE_INDEX,
                         reduction='none').sum(-1)


def npo_loss(model, ref_model, inputs, beta: float = NPO_BETA) -> torch.Tensor:
  """NPO's forget loss (open-unlearning `compute_dpo_loss(win_inputs=None)`)."""
  nll = batch_nll(model, inputs)
  with torch.no_grad():
    ref_nll = batch_nll(ref_model, inputs)
  lose_log_ratio = -(nll - ref_nll)
  return -2 / beta * F.logsigmoid(-beta * lose_log_ratio).mean()


class Worker:
  """The torch process: the carried model, one trainable copy per step kind, timed calls."""

  def __init__(self, data_path: str, threads: int):
    torch.set_num_threads(threads)
    data = dict(np.load(data_path))
    cfg = TransformerConfig(**json.loads(str(data['config'])))
    params = {k[len('p:'):]: v for k, v in data.items() if k.startswith('p:')}
    self.model = to_hf({'params': unflatten_dict(params, sep='/')},
                       LlamaForCausalLM(llama_config(cfg))).eval()
    self.inputs = inputs_of(data['x'], data['m'])
    self.learning_rate = float(data['learning_rate'])
    self.weight_decay = float(data['weight_decay'])
    self.steps = {}

  def logits(self, rows: int) -> np.ndarray:
    with torch.no_grad():
      return self.model(input_ids=self.inputs['input_ids'][:rows]).logits.numpy()

  def _step(self, kind: str):
    """The step function of `kind`, with its own copy of the model (and optimizer)."""
    model = copy.deepcopy(self.model)
    if kind == 'evaluate':
      def evaluate():
        with torch.no_grad():
          return batch_nll(model, self.inputs)
      return evaluate
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=self.learning_rate,
                                  weight_decay=self.weight_decay)
    ref_model = copy.deepcopy(self.model).eval() if kind == 'npo' else None
    objective = {'train': lambda: model(**self.inputs).loss,
                 'ascent': lambda: -model(**self.inputs).loss,
                 'npo': lambda: npo_loss(model, ref_model, self.inputs)}[kind]

    def step():
      loss = objective()
      loss.backward()
      optimizer.step()
      optimizer.zero_grad()
      return loss.detach()

    return step

  def losses(self, kind: str, steps: int) -> list[float]:
    """The loss (NLL sums for 'evaluate') of each of `steps` fresh steps of `kind`."""
    step = self._step(kind)
    return [step().numpy().tolist() for _ in range(steps)]

  def run(self, kind: str, steps: int) -> dict:
    """`steps` steps of `kind`, timed (the first call of a kind builds it, untimed)."""
    if kind not in self.steps:
      self.steps[kind] = self._step(kind)
    step, began = self.steps[kind], time.perf_counter()
    for _ in range(steps):
      step()
    return {'seconds': time.perf_counter() - began}

  def matmul(self, size: int, repeats: int) -> dict:
    """The best float32 [size, size] matmul rate over `repeats` calls, GFLOP/s."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.matmul(a, b)
    best = min(_seconds(lambda: torch.matmul(a, b)) for _ in range(repeats))
    return {'gflops': 2 * size ** 3 / best / 1e9}


def _seconds(fn) -> float:
  began = time.perf_counter()
  fn()
  return time.perf_counter() - began


def serve(conn, data_path: str, threads: int) -> None:
  """Answers (method, kwargs) requests on `conn` until it receives None."""
  worker = Worker(data_path, threads)
  workers.answer(conn, worker, {'torch': torch.__version__,
                                'transformers': transformers.__version__,
                                'threads': torch.get_num_threads()})
