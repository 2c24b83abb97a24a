"""The `pipeline` command: register sites and see what the pipeline produced.

    pipeline sites add SLUG --keywords FILE [--name NAME]
    pipeline sites list
    pipeline status [--site SLUG] [--json]
    pipeline estimate --site SLUG [--stage NAME] [--json]
    pipeline ideas list [--site SLUG] [--status STATUS] [--cluster ID] [--json]
    pipeline ideas approve|reject [--site SLUG] (IDS... | --cluster ID) [--note TEXT]
    pipeline costs [--site SLUG] [--month YYYY-MM] [--json]
    pipeline review list [--site SLUG] [--status STATUS] [--json] | show ID [--variant A|B]
    pipeline review approve [IDS...] [--site SLUG (--all | --cluster ID)] [--variant A|B]
    pipeline review reject [IDS...] [--site SLUG (--all | --cluster ID)] --note TEXT
    pipeline review publish ID [--variant A|B]
    pipeline desk [--host HOST] [--port N] | add-user NAME | hash-password
    pipeline batches list [--site SLUG] [--all] [--json] | cancel ID

`sites add` validates the keyword file, registers the site in the store and adds the `sites` partition
to the Dagster instance that `dagster` commands and `make ui` use (`DAGSTER_HOME`, default `.dagster/`
in the repository), so `dagster asset materialize -m pipeline.definitions --select '*' --partition SLUG`
runs the chain for it.

The commands live by group in `sites`, `status` (with `estimate`), `costs`, `ideas` (idea review),
`review`, `automation` (metrics and trigger rules), `desk` (the review desk web app) and `batches`; this
module assembles the parser and turns the errors a user can fix into exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pipeline.cli.automation import add_automation_commands
from pipeline.cli.base import UsageError
from pipeline.cli.batches import add_batches_commands
from pipeline.cli.costs import add_costs_commands
from pipeline.cli.desk import add_desk_commands
from pipeline.cli.ideas import add_ideas_commands
from pipeline.cli.review import add_review_commands
from pipeline.cli.sites import add_site_partition, add_sites_commands, ensure_dagster_home
from pipeline.cli.status import add_status_commands
from pipeline.keywords import KeywordFileError
from pipeline.metrics import MetricsFileError
from pipeline.review import ReviewError
from pipeline.sites import InvalidSlug
from pipeline.store import IdeaReviewError, UnknownSite

__all__ = ["add_site_partition", "ensure_dagster_home", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `pipeline` console script; returns the process exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
        return code
    except (
        KeywordFileError,
        InvalidSlug,
        UnknownSite,
        ReviewError,
        IdeaReviewError,
        MetricsFileError,
        UsageError,
    ) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipeline", description="AI content pipeline: sites and status.")
    commands = parser.add_subparsers(dest="command", required=True)
    add_sites_commands(commands)
    add_status_commands(commands)
    add_ideas_commands(commands)
    add_costs_commands(commands)
    add_review_commands(commands)
    add_automation_commands(commands)
    add_desk_commands(commands)
    add_batches_commands(commands)
    return parser
