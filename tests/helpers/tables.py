"""Reading back the Markdown tables that the leaderboard and `lt-bench compare` print."""


def md_table(text: str, heading: str) -> list[list[str]]:
    """The rows (lists of cell texts) of the Markdown table under the ``###`` heading that
    contains ``heading``, without its header and rule."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("###") and heading in line)
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split(" | ")])
    return rows
