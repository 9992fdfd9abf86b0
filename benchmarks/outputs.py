"""What a side-by-side benchmark leaves: its run as JSON and the page made from that JSON."""
import json


def write(run: dict, text: str, out: str | None, page: str | None) -> None:
  """Prints the page `text`, then writes `run` to `out` and `text` to `page` (each if given)."""
  print(text)
  if out:
    with open(out, 'w', encoding='utf-8') as f:
      json.dump(run, f, indent=1)
  if page:
    with open(page, 'w', encoding='utf-8') as f:
      f.write(text)
