"""PNG plots of a rigorous evaluation (matplotlib, Agg backend: no display needed).

  tradeoff.png  UA vs RA per method (mean ± std over the N models), the oracle marked
  margins.png   margin histograms, unlearned vs oracle, on chosen forget examples
  roc.png       U-LiRA ROC curves (unlearned targets positive), the diagonal ideal
  cost.png      wall time for N models vs KLoM p95 on D_f, the oracle marked
"""
import math
import os

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402
from sklearn.metrics import auc, roc_curve  # noqa: E402

from mu_jax.files import atomic_write  # noqa: E402

REFERENCE_ROWS = ('original', 'retrain', 'retrain (clean)')
MAX_HISTOGRAM_ROWS = 8


def _scored(rows: list[dict]) -> list[dict]:
  return [r for r in rows if not r.get('status') and not math.isnan(r.get('UA', math.nan))]


def _save(fig, path: str) -> None:
  atomic_write(path, lambda f: fig.savefig(f, format='png', dpi=100, bbox_inches='tight'))
  plt.close(fig)


def _color(i: int):
  return plt.get_cmap('tab20')(i % 20)


def tradeoff(rows: list[dict], path: str) -> None:
  fig, ax = plt.subplots(figsize=(7.5, 4.5))
  for i, r in enumerate(_scored(rows)):
    oracle = r['method'] == 'retrain'
    ax.errorbar(r['UA'], r['RA'], xerr=r.get('UA std', 0), yerr=r.get('RA std', 0),
                fmt='*' if oracle else 'o', ms=18 if oracle else 6, capsize=2,
                color='black' if oracle else _color(i), zorder=3 if oracle else 2,
                mfc='none' if oracle else _color(i), label=r['method'])
  ax.set(xlabel='UA (%): 100 − forget accuracy', ylabel='RA (%): retain accuracy',
         title='Forgetting vs retained accuracy, mean ± std over the models (★ oracle)')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc='center left', bbox_to_anchor=(1.01, 0.5))
  _save(fig, path)


def chosen_examples(klom_forget: np.ndarray) -> list[tuple[str, int]]:
  """(label, index) of the forget examples with the largest, median and smallest KLoM."""
  order = np.argsort(klom_forget, kind='stable')
  picks = [('max KLoM', order[-1]), ('median KLoM', order[len(order) // 2]),
           ('min KLoM', order[0])]
  seen, out = set(), []
  for label, i in picks:
    if int(i) not in seen:
      seen.add(int(i))
      out.append((label, int(i)))
  return out


def margin_histograms(rows: list[dict], details: dict, oracle_margins: np.ndarray,
                      path: str) -> None:
  names = [r['method'] for r in _scored(rows) if r['method'] in details][:MAX_HISTOGRAM_ROWS]
  examples = chosen_examples(details['original']['klom_forget'] if 'original' in details
                             else details[names[0]]['klom_forget'])
  fig, axes = plt.subplots(len(names), len(examples), squeeze=False, layout='constrained',
                           figsize=(3.2 * len(examples), 1.6 * len(names)))
  for i, name in enumerate(names):
    for j, (label, e) in enumerate(examples):
      ax = axes[i, j]
      u, o = details[name]['margins'][:, e], oracle_margins[:, e]
      bins = np.linspace(min(u.min(), o.min()), max(u.max(), o.max()) + 1e-6, 21)
      ax.hist(o, bins, alpha=0.5, label='oracle', color='tab:gray')
      ax.hist(u, bins, alpha=0.6, label=name, color='tab:blue')
      ax.set_yticks([])
      ax.tick_params(labelsize=6)
      if i == 0:
        ax.set_title(f'forget example {e} ({label} of original)', fontsize=7)
      if j == 0:
        ax.set_ylabel(name, fontsize=7)
  axes[0, 0].legend(fontsize=6)
  fig.suptitle('Margin φ over N models: unlearned (blue) vs oracle (gray)', fontsize=9)
  _save(fig, path)


def roc(rows: list[dict], details: dict, path: str) -> None:
  fig, ax = plt.subplots(figsize=(5, 5))
  for i, r in enumerate(_scored(rows)):
    d = details.get(r['method'])
    if d is None:
      continue
    scores = np.concatenate([d['ulira_u'].ravel(), d['ulira_o'].ravel()])
    labels = np.concatenate([np.ones(d['ulira_u'].size), np.zeros(d['ulira_o'].size)])
    fpr, tpr, _ = roc_curve(labels, scores)
    ax.plot(fpr, tpr, lw=1, color=_color(i), label=f"{r['method']} (AUC {auc(fpr, tpr):.2f})")
  ax.plot([0, 1], [0, 1], 'k--', lw=1, label='indistinguishable')
  ax.set(xlabel='false positive rate (oracle called unlearned)',
         ylabel='true positive rate (unlearned called unlearned)',
         title='U-LiRA on the forget set, per method')
  ax.legend(fontsize=6, loc='lower right')
  _save(fig, path)


def cost_quality(rows: list[dict], path: str) -> None:
  fig, ax = plt.subplots(figsize=(6, 4.5))
  for i, r in enumerate(_scored(rows)):
    if r['method'] == 'original' or not r.get('seconds', 0) > 0:
      continue
    oracle = r['method'] == 'retrain'
    ax.scatter(r['seconds'], r['KLoM f p95'], marker='*' if oracle else 'o',
               s=160 if oracle else 30, color='black' if oracle else _color(i), zorder=3)
    ax.annotate(r['method'], (r['seconds'], r['KLoM f p95']), textcoords='offset points',
                xytext=(4, 4), fontsize=7)
  ax.set_xscale('log')
  ax.set_yscale('symlog', linthresh=0.01)
  ax.set(xlabel=f'seconds for all {_models(rows)} models (log)',
         ylabel='KLoM p95 on D_f (lower is better)',
         title='Cost vs quality (★ retraining the oracles)')
  ax.grid(alpha=0.3)
  _save(fig, path)


def _models(rows):
  return next((r['models'] for r in rows if 'models' in r), 'N')


def write_all(rows: list[dict], details: dict, directory: str) -> list[str]:
  """All four plots into `directory`; for sequential requests, those of the last one."""
  if any('request' in r for r in rows):
    last = max(r['request'] for r in rows if 'request' in r)
    rows = [r for r in rows if r.get('request') == last]
    details = {k.rsplit('@', 1)[0]: v for k, v in details.items() if k.endswith(f'@{last}')}
  paths = [os.path.join(directory, f) for f in
           ('tradeoff.png', 'margins.png', 'roc.png', 'cost.png')]
  tradeoff(rows, paths[0])
  if 'oracle' in details and any(r['method'] in details for r in _scored(rows)):
    margin_histograms(rows, details, details['oracle']['margins'], paths[1])
  roc(rows, details, paths[2])
  cost_quality(rows, paths[3])
  return [p for p in paths if os.path.exists(p)]
