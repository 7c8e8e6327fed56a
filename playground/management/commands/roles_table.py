"""`manage.py roles_table`: the roles table (access.POLICY) as Markdown.

Prints the table; `--write FILE` puts it between the `<!-- roles:start -->` and
`<!-- roles:end -->` markers of FILE (the README), which tests/test_docs.py checks.
"""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from playground import access

START, END = "<!-- roles:start -->", "<!-- roles:end -->"
YES, NO = "✓", "—"


def markdown() -> str:
    """access.roles_table() as a Markdown table: one row per action, a column per role."""
    roles = [str(role) for role in access.ROLES]
    lines = [
        "| Action | What it allows | " + " | ".join(role.capitalize() for role in roles) + " |",
        "|---|---|" + ":-:|" * len(roles),
    ]
    for row in access.roles_table():
        marks = " | ".join(YES if row["roles"][role] else NO for role in roles)
        what = row["what"].replace("|", "\\|")
        lines.append(f"| `{row['action']}` | {what} | {marks} |")
    return "\n".join(lines) + "\n"


def between_markers(text: str) -> str:
    """What `text` holds between the markers (ValueError without them)."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ValueError(f"expected one {START} … {END} pair")
    return text.split(START, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def replaced(text: str) -> str:
    """`text` with the table between its markers replaced by the current one."""
    between_markers(text)
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    return f"{head}{START}\n{markdown()}{END}{tail}"


class Command(BaseCommand):
    help = "Print the roles table (the permission policy) as Markdown, or write it into a file's markers."

    def add_arguments(self, parser):
        parser.add_argument("--write", metavar="FILE", help="replace the table between the markers of FILE")

    def handle(self, *args, **options):
        if not options["write"]:
            self.stdout.write(markdown(), ending="")
            return
        path = Path(options["write"])
        try:
            path.write_text(replaced(path.read_text()))
        except (OSError, ValueError) as exc:
            raise CommandError(f"{path}: {exc}") from None
        self.stdout.write(f"Wrote the roles table into {path}.")
