"""The language-model benchmark: a TOFU/MUSE-style corpus generated offline, a transformer
pre-trained on its world knowledge, a target fine-tuned on every author and retain models
(the oracle) on the retain authors only, and the LM evaluation suite."""
