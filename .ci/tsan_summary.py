"""Summarise ThreadSanitizer logs for the tsan gate of .ci/run: each
distinct report once, as its kind and the top frames of its first two
stacks (for a data race: the two accesses), with a count.

    python .ci/tsan_summary.py LOG...
"""
import collections
import re
import sys

FRAME = re.compile(r"^\s+#0 (\S+) (\S+) \(")


def reports(text):
    for block in text.split("==================")[1:]:
        lines = block.strip().splitlines()
        if not lines or not lines[0].startswith("WARNING: ThreadSanitizer"):
            continue
        kind = lines[0].split("ThreadSanitizer: ", 1)[1]
        kind = re.sub(r" \(pid=\d+\)", "", kind)
        tops = []
        for line in lines:
            m = FRAME.match(line)
            if m:
                tops.append(f"{m.group(1)} ({m.group(2)})")
        yield kind, tuple(tops[:2])


def main(paths):
    seen = collections.Counter()
    for path in paths:
        with open(path, errors="replace") as f:
            seen.update(reports(f.read()))
    for (kind, tops), n in seen.most_common():
        print(f"{n:4d}x {kind}: " + " / ".join(tops))
    print(f"{sum(seen.values())} report(s), {len(seen)} distinct")


if __name__ == "__main__":
    main(sys.argv[1:])
