"""Language-model unlearning metrics, each following the benchmark's official code.

`tokens` turns logits into per-token statistics on the device; `tofu`, `muse`
and `mia` reduce those (and generated texts) to the TOFU, MUSE and
membership-inference numbers on the host. Imported by module name.

Official sources read (commits of the stored snapshots):
  TOFU            locuslab/tofu @ bdc209e: evaluate_util.py, aggregate_eval_stat.py
  open-unlearning locuslab/open-unlearning @ d3d7cf9: src/evals/metrics/*.py,
                  src/evals/metrics/mia/*.py, configs/eval/{tofu,muse}_metrics/*.yaml
  MUSE            swj0419/muse_bench @ fcd6651: eval.py, metrics/{verbmem,knowmem,
                  privleak,logger}.py, constants.py
  Min-K%++        zjysteven/mink-plus-plus @ 5596c65: run.py
"""
