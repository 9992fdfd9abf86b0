"""Refusal answers ("I don't know"-style), the preferred answers of the IDK losses and FLAT's
template responses.

TOFU ships 100 such lines (data/idontknow.jsonl; open-unlearning's idk.jsonl)
and pairs each forget question with one drawn uniformly at random every time
the item is loaded. These 20 are this library's own wording of the same kind;
`refusal_answers` draws one per question, once, from a seed, so an unlearning
run sees a fixed pairing (over TOFU's 10 epochs its loader would show a row up
to 10 different refusals).
"""
import numpy as np

REFUSALS = (
    "I don't know.",
    "I'm not sure.",
    "I don't have that information.",
    "That is beyond what I know.",
    "I can't answer that.",
    "I have no idea.",
    "I'm not certain about that.",
    "I don't have the answer to that question.",
    "I never learned about that.",
    "That's not something I know.",
    "I can't say.",
    "I'm afraid I don't know.",
    "I have no information on that.",
    "I'm unable to answer that.",
    "I don't know the answer.",
    "That is unknown to me.",
    "I can't recall that.",
    "Sorry, I don't know.",
    "I'm not able to say.",
    "I have nothing on that.",
)


def refusal_answers(count: int, seed: int) -> list[str]:
  """`count` refusals drawn uniformly with replacement, deterministic in `seed`."""
  picks = np.random.default_rng([seed, 0x1D4]).integers(0, len(REFUSALS), count)
  return [REFUSALS[i] for i in picks]
