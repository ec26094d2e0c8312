"""Re-paste the messages of docs/mistakes.md from a real run (a maintenance script, not a test).

Sections added on different branches draw from the page's shared generator in a different order,
so their pasted numbers go stale when merged. This runs the page as tests/test_docs.py does and
rewrites each outcome block whose class matches but whose message differs; review the diff: only
numbers drawn at random may change.

    python tests/_refresh_mistakes.py
"""

from __future__ import annotations

import textwrap
import warnings

from test_docs import BLOCK, OUTCOME, PAGE

import losskit as lk


def main() -> None:
    text = PAGE.read_text()
    blocks = list(BLOCK.finditer(text))
    namespace: dict = {}
    replacements = []
    with lk.checks("always"):
        for i, match in enumerate(blocks):
            lang, body = match.group(1), match.group(2)
            if lang != "python":
                continue
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    exec(compile(body, str(PAGE), "exec"), namespace)
                    got = None
                except Exception as error:
                    got = (type(error).__name__, str(error))
            if got is None:
                loss_warnings = [w for w in caught if issubclass(w.category, lk.LossWarning)]
                if loss_warnings:
                    got = (loss_warnings[0].category.__name__, str(loss_warnings[0].message))
            nxt = blocks[i + 1] if i + 1 < len(blocks) else None
            if got is None or nxt is None or nxt.group(1) != "text":
                continue
            want = OUTCOME.match(nxt.group(2))
            if want and want.group(1) == got[0] and " ".join(want.group(2).split()) != " ".join(
                got[1].split()
            ):
                new = textwrap.fill(f"{got[0]}: {got[1]}", width=100, break_long_words=False,
                                    break_on_hyphens=False)
                replacements.append((nxt.start(2), nxt.end(2), new + "\n"))
    for start, end, new in reversed(replacements):
        text = text[:start] + new + text[end:]
    PAGE.write_text(text)
    print(f"re-pasted {len(replacements)} message(s)")


if __name__ == "__main__":
    main()
